package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// exactPolicy converts without loss: one named node, its own interface.
const exactPolicy = `
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {name: exact}
spec:
  selectors: [{podSelector: {matchLabels: {app: b, io.kubernetes.pod.namespace: ns}}}]
  destinationCIDRs: [198.51.100.0/24]
  egressGateway: {nodeSelector: {matchLabels: {kubernetes.io/hostname: gw-1}}, interface: eth1}
`

const foreignObject = `
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
`

// The conversion package's fixtures: egressGateways with three entries, and a policy whose
// dropped exclusion widens it.
var (
	spreadFile  = filepath.Join("..", "convert", "testdata", "egress-gateways.yaml")
	widenedFile = filepath.Join("..", "convert", "testdata", "widened.yaml")
)

func TestConvertCommand(t *testing.T) {
	readFile := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	severalGateways := readFile(spreadFile)
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	exactFile := file("exact.yaml", exactPolicy)
	brokenFile := file("broken.yaml", "a: [unclosed")
	policiesDir := filepath.Join(dir, "policies")
	if err := os.Mkdir(policiesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"1-exact.yaml": exactPolicy, "2-spread.yml": severalGateways, "README.md": "not YAML: ["} {
		if err := os.WriteFile(filepath.Join(policiesDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	static := []string{"--provider", "static", "--zone", "z1", "--subnet", "192.0.2.0/24"}

	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		// stdout and stderr must contain each of these; noStdout: stdout must be empty.
		stdout, stderr []string
		noStdout       bool
	}{
		{
			name: "exact, from stdin", stdin: exactPolicy, args: []string{"convert"},
			code: ExitOK, stdout: []string{"kind: EgressGateway", "kind: EgressPolicy", "name: exact"},
		},
		{
			name: "exact, -f -", stdin: exactPolicy, args: []string{"convert", "-f", "-"},
			code: ExitOK, stdout: []string{"name: exact"},
		},
		{
			name: "egressIP without --provider: skipped, nothing else to write", stdin: policy, args: []string{"convert"},
			code: ExitLossy, noStdout: true,
			stderr: []string{"error: CiliumEgressGatewayPolicy/p spec.egressGateway.egressIP:", "skipped", "converted with losses"},
		},
		{
			name: "egressIP kept in a static pool", stdin: policy, args: append([]string{"convert", "-"}, static...),
			code: ExitOK, stdout: []string{"192.0.2.10"},
		},
		{
			name: "--strict is accepted and changes nothing", stdin: policy, args: []string{"convert", "--strict"},
			code: ExitLossy, noStdout: true,
		},
		{
			name: "a skipped object: the rest is written, exit 3", stdin: exactPolicy + "---" + foreignObject, args: []string{"convert"},
			code: ExitLossy, stdout: []string{"name: exact"},
			stderr: []string{"error: ConfigMap/unrelated: not an egress gateway policy; skipped", "converted with losses"},
		},
		{
			name: "a dropped exclusion widens the policy: exit 3", args: []string{"convert", "-f", widenedFile},
			code: ExitLossy, stdout: []string{"- 10.1.0.0/16", "gateway: widened"},
			stderr: []string{"error: " + widenedFile + ": CiliumEgressGatewayPolicy/widened spec.excludedCIDRs[1]:", "traffic to it now uses the gateway"},
		},
		{
			name: "egressGateways with two entries", args: append([]string{"convert", "-f", spreadFile}, static...),
			code: ExitOK, stdout: []string{"- 192.0.2.11\n        - 192.0.2.12\n        - 192.0.2.13\n", "      - gw-1\n      - gw-2\n      - gw-3\n"},
			stderr: []string{"info: " + spreadFile + ": CiliumEgressGatewayPolicy/spread spec.egressGateways: Cilium assigns each pod to one of the 3 gateways"},
		},
		{
			name: "-f repeated, issues name the file", args: append([]string{"convert", "-f", exactFile, "--filename", spreadFile}, static...),
			code: ExitOK, stdout: []string{"name: exact", "name: spread"},
		},
		{
			name: "-f with stdin and a file", stdin: severalGateways, args: append([]string{"convert", "-f", exactFile, "-f", "-"}, static...),
			code: ExitOK, stdout: []string{"name: exact", "name: spread"},
			stderr: []string{"<stdin>: CiliumEgressGatewayPolicy/spread"},
		},
		{
			name: "the same file twice: the second definition is a loss", args: []string{"convert", "-f", exactFile, "-f", exactFile},
			code: ExitLossy, stdout: []string{"name: exact"},
			stderr: []string{"defined again (first in " + exactFile + ")"},
		},
		{
			name: "-f a directory reads its .yaml and .yml files", args: append([]string{"convert", "-f", policiesDir}, static...),
			code: ExitOK, stdout: []string{"name: exact", "name: spread"},
		},
		{
			name: "a FILE argument, as before -f", args: []string{"convert", exactFile},
			code: ExitOK, stdout: []string{"name: exact"},
		},
		{
			name: "a missing file is bad input: exit 1, nothing written", args: []string{"convert", "-f", exactFile, "-f", filepath.Join(dir, "nope.yaml")},
			code: ExitFailure, noStdout: true, stderr: []string{"nope.yaml"},
		},
		{
			name: "broken YAML is bad input: exit 1, nothing written", args: []string{"convert", "-f", exactFile, "-f", brokenFile},
			code: ExitFailure, noStdout: true, stderr: []string{"broken.yaml"},
		},
		{
			name: "stdin twice", args: []string{"convert", "-f", "-", "-f", "-"},
			code: ExitFailure, noStdout: true, stderr: []string{"stdin can be read once"},
		},
		{
			name: "--help exits 0 with the help on stdout", args: []string{"convert", "--help"},
			code: ExitOK, stdout: []string{"Usage: egressctl convert", "Exit codes:", "converted with losses", "-filename"},
		},
		{
			name: "-h too", args: []string{"convert", "-h"},
			code: ExitOK, stdout: []string{"Usage: egressctl convert"},
		},
		{
			name: "an unknown flag is usage: exit 2", args: []string{"convert", "--frobnicate"},
			code: ExitUsage, noStdout: true, stderr: []string{"flag provided but not defined: -frobnicate", "Usage: egressctl convert"},
		},
		{
			name: "a bad --subnet is usage: exit 2", args: []string{"convert", "--subnet", "nope"},
			code: ExitUsage, noStdout: true, stderr: []string{"--subnet"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if tc.noStdout && out != "" {
				t.Errorf("stdout not empty")
			}
			if tc.code == ExitOK && (strings.Contains(errOut, "error:") || strings.Contains(errOut, "warning:")) {
				t.Errorf("exit 0 with a loss on stderr")
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
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
	// Every command's --help exits 0 with its help on stdout, as kubectl's do.
	for _, cmd := range []string{"status", "explain", "list", "probe", "convert"} {
		if code, out, errOut := run(t, "", cmd, "--help"); code != ExitOK || !strings.Contains(out, "Usage: egressctl "+cmd) || errOut != "" {
			t.Errorf("%s --help: code %d\nstdout:\n%s\nstderr:\n%s", cmd, code, out, errOut)
		}
	}
}

func TestListWithoutDatapath(t *testing.T) {
	code, _, errOut := run(t, "", "list", "--bpffs", t.TempDir())
	if code != ExitFailure || !strings.Contains(errOut, "no egressd datapath pinned under") || !strings.Contains(errOut, "kubectl exec") {
		t.Errorf("code %d, stderr:\n%s", code, errOut)
	}
}
