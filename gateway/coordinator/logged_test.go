package coordinator

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// capturedLog is every line a funcr JSON logger wrote, decoded.
type capturedLog struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (c *capturedLog) write(obj string) {
	var m map[string]any
	if err := json.Unmarshal([]byte(obj), &m); err != nil {
		m = map[string]any{"unparsed": obj}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, m)
}

func (c *capturedLog) find(msg string, match func(map[string]any) bool) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range c.lines {
		if l["msg"] == msg && match(l) {
			out = append(out, l)
		}
	}
	return out
}

// A move's cloud mutation is logged once, by the coordinator (the provider never logs), with
// the standard keys of docs/logging.md.
func TestMutationLogCarriesStandardKeys(t *testing.T) {
	e := newEnv(t, 1, 2, nil)
	e.createGateway()
	e.settle()
	victim := e.egressIPs()[0]
	holder := victim.Status.Node

	var captured capturedLog
	ctx := log.IntoContext(e.ctx, funcr.NewJSON(captured.write, funcr.Options{}))
	e.health.fail(e.ips[holder], true)
	for range 3 {
		if _, err := e.pass(ctx); err != nil {
			t.Logf("pass: %v", err)
		}
	}
	moved := e.egressIP(victim.Name)
	if moved.Status.Node == holder || moved.Status.Node == "" {
		t.Fatalf("%s did not move off %s: status.node %q", victim.Spec.IP, holder, moved.Status.Node)
	}

	moves := captured.find("cloud mutation", func(l map[string]any) bool { return l[keyOp] == opMove })
	if len(moves) != 1 {
		t.Fatalf("%d move lines, want 1: %v", len(moves), captured.lines)
	}
	want := map[string]any{
		keyOp: opMove, keyIP: victim.Spec.IP, keyNode: moved.Status.Node, keyFrom: holder,
		keyGateway: e.gateway, keyProvider: "aws", keyResult: "ok",
	}
	for k, v := range want {
		if moves[0][k] != v {
			t.Errorf("move line %s = %v, want %v (line %v)", k, moves[0][k], v, moves[0])
		}
	}
	if _, ok := moves[0]["duration"]; !ok {
		t.Errorf("move line has no duration: %v", moves[0])
	}
	placing := captured.find("placing", func(l map[string]any) bool { return l[keyIP] == victim.Spec.IP })
	if len(placing) != 1 || placing[0][keyFrom] != holder || placing[0][keyNode] != moved.Status.Node {
		t.Errorf("placing lines %v, want one from %s to %s", placing, holder, moved.Status.Node)
	}
}
