package dataplane

import "testing"

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"": {}, "1024-65535": {1024, 65535}, "40000-40000": {40000, 40000}} {
		if got, err := ParsePortRange(in); err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0-10", "20-10", "1024", "1024-", "a-b", "1024-70000", " 1-2", "1-2x"} {
		if got, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) = %v, want an error", in, got)
		}
	}
	if n := (PortRange{40000, 40015}).Size(); n != 16 {
		t.Errorf("size of 40000-40015: %d", n)
	}
}
