package lab

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/egressd/egressd/bpf"
)

// Drops counts the datapath's drops by node and reason ("node/reason" → packets), from every
// node's pinned stats map, summed over groups and gateways. A node without a datapath (cold
// crashed, agent not started yet) is left out.
type Drops map[string]uint64

// Drops reads every node's drop counters.
func (l *Lab) Drops() Drops {
	d := Drops{}
	for _, n := range l.Nodes {
		r, err := bpf.OpenPinned(filepath.Join(l.bpffs, n.Name, "egressd"))
		if err != nil {
			continue
		}
		stats, err := r.Stats()
		r.Close()
		if err != nil {
			continue
		}
		for _, s := range stats {
			for i, c := range s.Drops {
				if c > 0 {
					d[n.Name+"/"+bpf.DropReasonNames[i]] += c
				}
			}
		}
	}
	return d
}

// Since returns the drops counted after before (a counter that went back, a node whose
// datapath was rebuilt, counts from zero).
func (d Drops) Since(before Drops) Drops {
	out := Drops{}
	for k, v := range d {
		if b := before[k]; v > b {
			out[k] = v - b
		} else if v < b {
			out[k] = v
		}
	}
	return out
}

// String lists the non-zero counts, sorted: "gw-a1/not_served=3 worker-b1/held=12".
func (d Drops) String() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if d[k] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, d[k])
	}
	return b.String()
}
