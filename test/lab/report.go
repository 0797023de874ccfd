package lab

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Event is something the walkthrough or a benchmark did to the cluster.
type Event struct {
	Name  string    `json:"name"`
	Kind  string    `json:"kind"` // reboot, drain
	Nodes []string  `json:"nodes"`
	At    time.Time `json:"at"`
	// RestoredAt is when the nodes came back (reboot) or got their label back (drain).
	RestoredAt time.Time `json:"restoredAt"`
	// End closes the event's analysis window (the next event, or the end of the run).
	End time.Time `json:"end"`
	// AffectedIPs are the egress IPs the event's nodes held (gateway status) just before it.
	AffectedIPs []string `json:"affectedIPs"`
	// IPSetBefore and IPSetAfter are the gateway's status.egressIPs just before the event and
	// once it settled again.
	IPSetBefore []string `json:"ipSetBefore"`
	IPSetAfter  []string `json:"ipSetAfter"`
}

// EventResult is what the monitor saw of one event.
type EventResult struct {
	Event
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// Outage is the window during which new flows failed: from the first failed request sent
	// after the event to the last one, plus one interval (0 when nothing failed). It is the
	// figure held against DESIGN.md §8 and the published 3 s / 6 s.
	Outage time.Duration `json:"outageNs"`
	// LongestGap is the longest time between two successful requests across the event.
	LongestGap time.Duration `json:"longestGapNs"`
	// FirstSurvivor is the time from the event to the first success through an egress IP the
	// event's nodes did not hold.
	FirstSurvivor time.Duration `json:"firstSurvivorNs"`
	// SourcesBefore and SourcesAfter are the egress IPs the echo server saw in the 3 s before
	// the event and in the last 3 s of its window.
	SourcesBefore []string `json:"sourcesBefore"`
	SourcesAfter  []string `json:"sourcesAfter"`
	// SameIPSet: the gateway's egress IP set did not change across the event.
	SameIPSet bool `json:"sameIPSet"`
}

// Report is the walkthrough's result.
type Report struct {
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
	Interval time.Duration  `json:"intervalNs"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	BySource map[string]int `json:"bySource"`
	// PublicOf maps a private egress IP to its Elastic IP, when it has one.
	PublicOf    map[string]string `json:"publicOf,omitempty"`
	IPSetBefore []string          `json:"ipSetBefore"`
	IPSetAfter  []string          `json:"ipSetAfter"`
	Events      []EventResult     `json:"events"`
	Notes       []string          `json:"notes,omitempty"`
	Samples     []Sample          `json:"samples"`
}

// Analyze computes an event's figures from the monitor's samples (sorted by send time).
func Analyze(samples []Sample, ev Event) EventResult {
	r := EventResult{Event: ev, SameIPSet: slices.Equal(ev.IPSetBefore, ev.IPSetAfter)}
	affected := map[string]bool{}
	for _, ip := range ev.AffectedIPs {
		affected[ip] = true
	}
	var firstFail, lastFail time.Time
	var prevOK time.Time
	before, after := map[string]bool{}, map[string]bool{}
	for _, s := range samples {
		if s.OK() && s.Sent.Before(ev.At) {
			prevOK = s.Sent
			if ev.At.Sub(s.Sent) <= 3*time.Second {
				before[s.Source] = true
			}
		}
		if s.Sent.Before(ev.At) || !s.Sent.Before(ev.End) {
			continue
		}
		r.Requests++
		if !s.OK() {
			r.Failed++
			if firstFail.IsZero() {
				firstFail = s.Sent
			}
			lastFail = s.Sent
			continue
		}
		if !prevOK.IsZero() {
			r.LongestGap = max(r.LongestGap, s.Sent.Sub(prevOK))
		}
		prevOK = s.Sent
		if r.FirstSurvivor == 0 && !affected[s.Source] {
			r.FirstSurvivor = s.Sent.Sub(ev.At)
		}
		if ev.End.Sub(s.Sent) <= 3*time.Second {
			after[s.Source] = true
		}
	}
	if r.Failed > 0 {
		r.Outage = lastFail.Sub(firstFail) + MonitorInterval
	}
	r.SourcesBefore = slices.Sorted(func(yield func(string) bool) {
		for k := range before {
			if !yield(k) {
				return
			}
		}
	})
	r.SourcesAfter = slices.Sorted(func(yield func(string) bool) {
		for k := range after {
			if !yield(k) {
				return
			}
		}
	})
	return r
}

// BuildReport assembles the report of a run.
func BuildReport(samples []Sample, events []Event, ipsBefore, ipsAfter []string, public map[string]string) *Report {
	sortSamples(samples)
	r := &Report{Interval: MonitorInterval, BySource: map[string]int{}, PublicOf: public,
		IPSetBefore: ipsBefore, IPSetAfter: ipsAfter, Samples: samples}
	if len(samples) > 0 {
		r.Start, r.End = samples[0].Sent, samples[len(samples)-1].Sent
	}
	for _, s := range samples {
		r.Requests++
		if s.OK() {
			r.BySource[s.Source]++
		} else {
			r.Failed++
		}
	}
	for _, ev := range events {
		r.Events = append(r.Events, Analyze(samples, ev))
	}
	return r
}

// WriteTable prints the walkthrough's table.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\nRequests: %d over %s (one every %s, each a new connection), failed: %d\n\n",
		r.Requests, r.End.Sub(r.Start).Round(time.Second), r.Interval, r.Failed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EGRESS IP (SEEN BY ECHO)\tREQUESTS\tSHARE")
	for _, src := range slices.Sorted(keys(r.BySource)) {
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\n", src, r.BySource[src], 100*float64(r.BySource[src])/float64(max(r.Requests, 1)))
	}
	fmt.Fprintf(tw, "failed\t%d\t%.1f%%\n", r.Failed, 100*float64(r.Failed)/float64(max(r.Requests, 1)))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tNODES\tREQUESTS\tFAILED\tOUTAGE\tLONGEST GAP\tFIRST VIA SURVIVOR\tIP SET SAME")
	for _, e := range r.Events {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%v\n", e.Name, strings.Join(e.Nodes, ","), e.Requests, e.Failed,
			fmtDur(e.Outage), fmtDur(e.LongestGap), fmtDur(e.FirstSurvivor), e.SameIPSet)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nEgress IP set before: %s\nEgress IP set after:  %s\n", strings.Join(r.IPSetBefore, " "), strings.Join(r.IPSetAfter, " "))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.Round(time.Millisecond).String()
}

func keys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Write writes report.json and report.html into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	var h strings.Builder
	r.writeHTML(&h)
	return os.WriteFile(filepath.Join(dir, "report.html"), []byte(h.String()), 0o644)
}

var palette = []string{"#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

// bucket is the time resolution of the plot.
const bucket = 500 * time.Millisecond

func (r *Report) writeHTML(w *strings.Builder) {
	esc := html.EscapeString
	w.WriteString(`<!doctype html><html><head><meta charset="utf-8"><title>egressd lab walkthrough</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.bad{color:#c00}</style></head><body>
<h1>egressd lab walkthrough</h1>
`)
	fmt.Fprintf(w, "<p>%s → %s. One HTTP request every %s from the monitor pod to the echo server, each on a new connection. %d requests, <b>%d failed</b>.</p>\n",
		esc(r.Start.Format(time.RFC3339)), esc(r.End.Format("15:04:05")), r.Interval, r.Requests, r.Failed)
	w.WriteString(r.svg())
	w.WriteString("<h2>Requests per egress IP</h2><table><tr><th>egress IP seen by the echo server</th><th>requests</th><th>share</th></tr>\n")
	for _, src := range slices.Sorted(keys(r.BySource)) {
		fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%.1f%%</td></tr>\n", esc(src), r.BySource[src], 100*float64(r.BySource[src])/float64(max(r.Requests, 1)))
	}
	fmt.Fprintf(w, "<tr><td class=bad>failed</td><td>%d</td><td>%.1f%%</td></tr></table>\n", r.Failed, 100*float64(r.Failed)/float64(max(r.Requests, 1)))
	w.WriteString("<h2>Events</h2><table><tr><th>event</th><th>nodes</th><th>requests</th><th>failed</th><th>outage</th><th>longest gap between successes</th><th>first success via a survivor</th><th>egress IPs before → after</th></tr>\n")
	for _, e := range r.Events {
		fmt.Fprintf(w, "<tr><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s → %s%s</td></tr>\n",
			esc(e.Name), esc(strings.Join(e.Nodes, ", ")), e.Requests, e.Failed, fmtDur(e.Outage), fmtDur(e.LongestGap), fmtDur(e.FirstSurvivor),
			esc(strings.Join(e.IPSetBefore, " ")), esc(strings.Join(e.IPSetAfter, " ")), map[bool]string{true: "", false: " <b class=bad>changed</b>"}[e.SameIPSet])
	}
	w.WriteString("</table>\n<p>Outage: from the first failed request after the event to the last, plus one interval — how long new flows failed. Targets (DESIGN.md §8): p99 ≤ 0.5 s for one gateway, ≤ 1 s for three of four, 0 failed requests for a drain, the same egress IP set. Published figures to beat: 3 s, up to 6 s in batches.</p>\n")
	fmt.Fprintf(w, "<p>Egress IP set before: %s<br>after: %s</p>\n", esc(strings.Join(r.IPSetBefore, " ")), esc(strings.Join(r.IPSetAfter, " ")))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "<p>Note: %s</p>\n", esc(n))
	}
	var fails []Sample
	for _, s := range r.Samples {
		if !s.OK() {
			fails = append(fails, s)
		}
	}
	if len(fails) > 0 {
		w.WriteString("<h2>Failed requests</h2><table><tr><th>time</th><th>#</th><th>error</th></tr>\n")
		for i, s := range fails {
			if i == 500 {
				fmt.Fprintf(w, "<tr><td colspan=3>… %d more in report.json</td></tr>\n", len(fails)-i)
				break
			}
			fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%s</td></tr>\n", s.Sent.Format("15:04:05.000"), s.Seq, esc(s.Err))
		}
		w.WriteString("</table>\n")
	}
	w.WriteString("</body></html>\n")
}

// svg plots successful requests per egress IP and failed requests per 500 ms bucket, with the
// events as shaded spans.
func (r *Report) svg() string {
	const W, H, left, right, top, bottom = 1100.0, 380.0, 50.0, 170.0, 20.0, 40.0
	if r.End.Sub(r.Start) <= 0 {
		return "<p>(no samples)</p>"
	}
	n := int(r.End.Sub(r.Start)/bucket) + 1
	sources := slices.Sorted(keys(r.BySource))
	counts := map[string][]int{"failed": make([]int, n)}
	for _, s := range sources {
		counts[s] = make([]int, n)
	}
	ymax := 1
	for _, s := range r.Samples {
		i := int(s.Sent.Sub(r.Start) / bucket)
		k := s.Source
		if !s.OK() {
			k = "failed"
		}
		counts[k][i]++
		ymax = max(ymax, counts[k][i])
	}
	pw, ph := W-left-right, H-top-bottom
	x := func(t time.Duration) float64 { return left + pw*float64(t)/float64(r.End.Sub(r.Start)) }
	y := func(v int) float64 { return top + ph - ph*float64(v)/float64(ymax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-size="11" font-family="sans-serif">`+"\n", W, H)
	for _, e := range r.Events {
		x0, x1 := x(e.At.Sub(r.Start)), x(e.RestoredAt.Sub(r.Start))
		if e.RestoredAt.IsZero() || x1 < x0 {
			x1 = x0 + 2
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f2e6c9"/>`+"\n", x0, top, math.Max(x1-x0, 1), ph)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#a0522d" stroke-dasharray="3,2"/>`+"\n", x0, top, x0, top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#a0522d">%s</text>`+"\n", x0+3, top+10, html.EscapeString(e.Name))
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#000"/>`, left, top+ph, left+pw, top+ph)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#000"/>`+"\n", left, top, left, top+ph)
	for _, v := range []int{0, ymax / 2, ymax} {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%d</text>`, left-4, y(v)+4, v)
	}
	span := r.End.Sub(r.Start)
	step := 10 * time.Second
	if span > 5*time.Minute {
		step = time.Minute
	}
	for t := time.Duration(0); t <= span; t += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%ds</text>`, x(t), top+ph+14, int(t.Seconds()))
	}
	fmt.Fprintf(&b, "\n"+`<text x="%.0f" y="%.0f" text-anchor="middle">time since the monitor started; requests per %s</text>`+"\n", left+pw/2, H-6, bucket)
	series := append(sources, "failed")
	for i, s := range series {
		color := palette[i%len(palette)]
		if s == "failed" {
			color = "#d62728"
			for j, c := range counts[s] {
				if c > 0 {
					t := time.Duration(j) * bucket
					fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.8"/>`, x(t), y(c), math.Max(x(t+bucket)-x(t), 1), top+ph-y(c), color)
				}
			}
		} else {
			var pts []string
			for j, c := range counts[s] {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(time.Duration(j)*bucket+bucket/2), y(c)))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
		}
		label := s
		if p := r.PublicOf[s]; p != "" {
			label += " (" + p + ")"
		}
		fmt.Fprintf(&b, "\n"+`<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s: %d</text>`+"\n",
			left+pw+10, top+float64(i)*16, color, left+pw+24, top+float64(i)*16+9, html.EscapeString(label), sum(counts[s]))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func sum(v []int) int {
	t := 0
	for _, x := range v {
		t += x
	}
	return t
}

func sortSamples(s []Sample) {
	sort.SliceStable(s, func(i, j int) bool { return s[i].Sent.Before(s[j].Sent) })
}

// netipPrefix24 is the /24 holding a, the policy's destination.
func netipPrefix24(a netip.Addr) string {
	p, _ := a.Prefix(24)
	return p.String()
}

// Percentile returns the p-th percentile (0-100, nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
