package privileged

import (
	"os"
	"strings"
	"testing"
)

func TestSkipEnvWins(t *testing.T) {
	t.Setenv(SkipEnv, "1")
	if Available() {
		t.Fatalf("Available with %s set", SkipEnv)
	}
	if r := reason("eBPF"); !strings.Contains(r, SkipEnv) || !strings.Contains(r, "eBPF") {
		t.Errorf("skip message %q does not name %s and the need", r, SkipEnv)
	}
	ran := false
	t.Run("skipped", func(t *testing.T) {
		Require(t, "eBPF")
		ran = true
	})
	if ran {
		t.Error("Require did not stop the test")
	}
}

func TestRootDecides(t *testing.T) {
	t.Setenv(SkipEnv, "")
	if got, want := Available(), os.Geteuid() == 0; got != want {
		t.Fatalf("Available %v as uid %d", got, os.Geteuid())
	}
	if os.Geteuid() != 0 && !strings.Contains(reason("nftables"), "needs root (nftables)") {
		t.Errorf("non-root skip message %q", reason("nftables"))
	}
}
