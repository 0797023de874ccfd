package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

const policy = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: p}
spec:
  selectors: [{podSelector: {matchLabels: {app: a, io.kubernetes.pod.namespace: ns}}}]
  destinationCIDRs: [0.0.0.0/0]
  egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, egressIP: 192.0.2.10}
`

func TestConvertCommand(t *testing.T) {
	code, out, errOut := run(t, policy, "convert")
	if code != ExitOK || !strings.Contains(errOut, "error:") || strings.Contains(out, "kind:") {
		t.Errorf("lenient: code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code, _, _ := run(t, policy, "convert", "--strict"); code != ExitFailure {
		t.Errorf("strict with an unconvertible egressIP: code %d, want %d", code, ExitFailure)
	}
	code, out, errOut = run(t, policy, "convert", "--strict", "--provider", "static", "--zone", "z1", "--subnet", "192.0.2.0/24", "-")
	if code != ExitOK || !strings.Contains(out, "192.0.2.10") || strings.Contains(errOut, "error") || strings.Contains(errOut, "warning") {
		t.Errorf("static: code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code, _, _ := run(t, "", "convert", "--subnet", "nope"); code != ExitUsage {
		t.Errorf("bad --subnet: code %d", code)
	}
}

func TestProbeCommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("198.51.100.7\n"))
	}))
	defer srv.Close()
	code, out, errOut := run(t, "", "probe", srv.URL, "--interval", "20ms", "--duration", "150ms", "--max-failed", "0")
	if code != ExitOK || !strings.Contains(out, "198.51.100.7") || !strings.Contains(errOut, "source 198.51.100.7") {
		t.Errorf("code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if code, _, _ := run(t, "", "probe"); code != ExitUsage {
		t.Errorf("probe without URL: code %d", code)
	}
}

func TestCommands(t *testing.T) {
	if code, _, _ := run(t, ""); code != ExitUsage {
		t.Errorf("no command: %d", code)
	}
	if code, _, _ := run(t, "", "frobnicate"); code != ExitUsage {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, _ := run(t, "", "status", "-o", "xml"); code != ExitUsage {
		t.Errorf("status -o xml: %d", code)
	}
	if code, _, _ := run(t, "", "explain"); code != ExitUsage {
		t.Errorf("explain without a pod: %d", code)
	}
	if code, _, errOut := run(t, "", "explain", "a/p", "-n", "b"); code != ExitUsage || !strings.Contains(errOut, "-n says b") {
		t.Errorf("explain with two namespaces: %d %s", code, errOut)
	}
	if code, out, _ := run(t, "", "help"); code != ExitOK || !strings.Contains(out, "kubectl egressd") {
		t.Errorf("help: %d %s", code, out)
	}
}

func TestListWithoutDatapath(t *testing.T) {
	code, _, errOut := run(t, "", "list", "--bpffs", t.TempDir())
	if code != ExitFailure || !strings.Contains(errOut, "no egressd datapath pinned under") || !strings.Contains(errOut, "kubectl exec") {
		t.Errorf("code %d, stderr:\n%s", code, errOut)
	}
}
