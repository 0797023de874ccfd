// Package privileged decides, in one place, whether the tests that need root run: network
// namespaces, veths, nftables, eBPF programs, bpffs mounts. Every such test calls Require
// first. They run as root (CI is root) unless EGRESSD_SKIP_PRIVILEGED is set (make test-unit
// sets it); otherwise they skip with a message that says what they need.
package privileged

import (
	"os"
	"testing"
)

// SkipEnv, when set to anything, skips every privileged test even as root.
const SkipEnv = "EGRESSD_SKIP_PRIVILEGED"

// Available reports whether privileged tests run in this process: root, and SkipEnv unset.
func Available() bool { return reason("") == "" }

// Require skips tb unless privileged tests run here. needs says what the test uses root for
// ("network namespaces and eBPF"); it goes into the skip message.
func Require(tb testing.TB, needs string) {
	tb.Helper()
	if r := reason(needs); r != "" {
		tb.Skip(r)
	}
}

func reason(needs string) string {
	what := "root"
	if needs != "" {
		what = "root (" + needs + ")"
	}
	if os.Getenv(SkipEnv) != "" {
		return "skipping: " + SkipEnv + " is set; this test needs " + what
	}
	if os.Geteuid() != 0 {
		return "skipping: needs " + what + "; run as root, as CI does (set " + SkipEnv + " to skip these on purpose)"
	}
	return ""
}
