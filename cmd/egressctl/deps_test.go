package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedBinariesLinkNoTestCode: the binaries users install (egressctl, egressd-agent,
// egressd-controller) link no package of test/ (the lab, the cloud simulators, the netns
// harness) and no envtest. The lab is its own binary, test/lab/cmd/egressd-lab.
func TestShippedBinariesLinkNoTestCode(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to list the binaries' dependencies")
	}
	const module = "github.com/egressd/egressd"
	for _, bin := range []string{"egressctl", "egressd-agent", "egressd-controller"} {
		out, err := exec.Command(gobin, "list", "-deps", module+"/cmd/"+bin).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed %d packages: %q", bin, len(deps), deps)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, module+"/test/") || strings.Contains(d, "envtest") || strings.Contains(d, "cloudsim") {
				t.Errorf("%s links %s", bin, d)
			}
		}
	}
}
