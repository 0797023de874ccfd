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
	Name  string   `json:"name"`
	Kind  string   `json:"kind"` // reboot, drain, ...
	Nodes []string `json:"nodes"`
	// At is the crash instant: the event's first destructive action. Every figure of the
	// event is measured from it.
	At time.Time `json:"at"`
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
	// SettledAt is when the gateway's egress IP set and holders were whole again and stable:
	// what the caller observed, or Settled over a series of views. Zero: not observed.
	SettledAt time.Time `json:"settledAt,omitzero"`
	// UndeliveredSource counts the packets that left during the event with an egress IP the
	// fabric had not delivered to their node (the VPC router's counter, filled by the caller).
	// It must be 0.
	UndeliveredSource uint64 `json:"undeliveredSource"`
	// LostZones are the zones whose monitor pods the event took down with it (a zone loss
	// takes their workers): their requests are neither the survivors' outage nor failures
	// of a cloud move, and Analyze leaves them out.
	LostZones []string `json:"lostZones,omitempty"`
}

// MoveWindow is one cloud move of an egress IP: from the cloud accepting the call to the
// fabric delivering the address to its new holder (zero Delivered: not delivered).
type MoveWindow struct {
	IP        string    `json:"ip"`
	Accepted  time.Time `json:"accepted"`
	Delivered time.Time `json:"delivered,omitzero"`
}

// MoveResult is what the monitors saw during one move that started in an event's window.
type MoveResult struct {
	MoveWindow
	// Requests and Failed count the monitors' requests sent between Accepted and Delivered
	// (End when not delivered).
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
}

// FlowResult is one flow's view of an event: a flow is one monitor pod's client.
type FlowResult struct {
	Pod  string `json:"pod"`
	Zone string `json:"zone,omitempty"`
	// Requests and Failed count the flow's requests sent in [At, End).
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// SourceBefore is the egress IP of the flow's last success sent in the second before the
	// crash ("" if none).
	SourceBefore string `json:"sourceBefore,omitempty"`
	// Affected: a request of the flow sent after the crash failed, or SourceBefore is one of
	// the event's affected IPs. Why says which ("failed", "via <ip>", or both).
	Affected bool   `json:"affected"`
	Why      string `json:"why,omitempty"`
	// Outage (affected flows only) runs from the crash to the completion (Sent+RTT) of the
	// flow's first successful request sent after it, or, when one of its requests failed after
	// the crash, of its first success sent after that failure. Recovered is false when there
	// was none before End, and Outage then runs to End.
	Outage    time.Duration `json:"outageNs"`
	Recovered bool          `json:"recovered"`
	// FirstSource is the egress IP of that first success.
	FirstSource string `json:"firstSource,omitempty"`
}

// EventResult is what the monitors and the long-lived connections saw of one event.
type EventResult struct {
	Event
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// Flows has one entry per monitor pod that sent a request in the window.
	Flows         []FlowResult `json:"flows"`
	AffectedFlows int          `json:"affectedFlows"`
	// NoAffected: no flow was affected. Such an event has no outage figure: Summarize reports
	// it apart instead of counting it as 0.
	NoAffected bool `json:"noAffected"`
	// Outage is the longest outage of an affected flow (0 when NoAffected), crash-anchored.
	Outage time.Duration `json:"outageNs"`
	// Settle is At → SettledAt (0 when SettledAt is not set).
	Settle time.Duration `json:"settleNs"`
	// Moves are the cloud moves accepted in [At, End); MoveFailed sums their failed requests.
	Moves      []MoveResult `json:"moves,omitempty"`
	MoveFailed int          `json:"moveFailed"`
	// LongestGap is the longest time between two successful requests of one flow across the
	// event.
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
	// Conns is what the long-lived connections open at the crash went through (nil without
	// connection records).
	Conns *ConnResult `json:"conns,omitempty"`
}

// Report is the walkthrough's result.
type Report struct {
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
	Interval time.Duration  `json:"intervalNs"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	BySource map[string]int `json:"bySource"`
	// Pods are the monitor pods (the flows).
	Pods []string `json:"pods"`
	// PublicOf maps a private egress IP to its Elastic IP, when it has one.
	PublicOf    map[string]string `json:"publicOf,omitempty"`
	IPSetBefore []string          `json:"ipSetBefore"`
	IPSetAfter  []string          `json:"ipSetAfter"`
	Events      []EventResult     `json:"events"`
	// Summaries has one entry per event name, over its trials.
	Summaries []Summary    `json:"summaries"`
	Moves     []MoveWindow `json:"moves,omitempty"`
	Notes     []string     `json:"notes,omitempty"`
	Samples   []Sample     `json:"samples"`
	Conns     []ConnRecord `json:"conns,omitempty"`
}

// RunRecord is everything a run recorded, the input of its report.
type RunRecord struct {
	Samples     []Sample
	Events      []Event
	IPSetBefore []string
	IPSetAfter  []string
	// PublicOf maps private egress IPs to their public IPs: the echo server sees the public
	// one, the gateway's status names the private one.
	PublicOf map[string]string
	// Moves are the cloud moves of the run (accepted → delivered).
	Moves []MoveWindow
	// Conns are the long-lived connections' records (ConnSet.Records).
	Conns []ConnRecord
}

// justBefore is how far before the crash a flow's last success counts as its traffic at the
// crash.
const justBefore = time.Second

// Analyze computes an event's figures from the monitors' samples alone.
func Analyze(samples []Sample, ev Event) EventResult {
	return RunRecord{Samples: samples}.Analyze(ev)
}

// Analyze computes an event's figures: per flow (monitor pod), the outage from the crash
// (ev.At) to the flow's first success after it, for the flows the event affected; the settle
// time; the failed requests during each cloud move accepted in the window; and what the
// long-lived connections went through.
func (rec RunRecord) Analyze(ev Event) EventResult {
	r := EventResult{Event: ev, SameIPSet: slices.Equal(ev.IPSetBefore, ev.IPSetAfter)}
	if !ev.SettledAt.IsZero() {
		r.Settle = ev.SettledAt.Sub(ev.At)
	}
	affected := map[string]bool{}
	for _, ip := range ev.AffectedIPs {
		affected[ip] = true
		if p := rec.PublicOf[ip]; p != "" {
			affected[p] = true
		}
	}
	lost := func(s Sample) bool { return slices.Contains(ev.LostZones, s.Zone) }
	byPod := map[string][]Sample{}
	var pods []string
	for _, s := range rec.Samples {
		if lost(s) {
			continue
		}
		if _, ok := byPod[s.Pod]; !ok {
			pods = append(pods, s.Pod)
		}
		byPod[s.Pod] = append(byPod[s.Pod], s)
	}
	slices.Sort(pods)
	before, after := map[string]bool{}, map[string]bool{}
	for _, pod := range pods {
		samples := byPod[pod]
		sortSamples(samples)
		f, ok := analyzeFlow(samples, ev, affected, &r, before, after)
		if !ok {
			continue
		}
		r.Requests += f.Requests
		r.Failed += f.Failed
		if f.Affected {
			r.AffectedFlows++
			r.Outage = max(r.Outage, f.Outage)
		}
		r.Flows = append(r.Flows, f)
	}
	r.NoAffected = r.AffectedFlows == 0
	r.SourcesBefore = slices.Sorted(keys(before))
	r.SourcesAfter = slices.Sorted(keys(after))
	for _, m := range rec.Moves {
		if m.Accepted.Before(ev.At) || !m.Accepted.Before(ev.End) {
			continue
		}
		mr := MoveResult{MoveWindow: m}
		end := m.Delivered
		if end.IsZero() {
			end = ev.End
		}
		for _, s := range rec.Samples {
			if !lost(s) && !s.Sent.Before(m.Accepted) && !s.Sent.After(end) {
				mr.Requests++
				if !s.OK() {
					mr.Failed++
				}
			}
		}
		r.MoveFailed += mr.Failed
		r.Moves = append(r.Moves, mr)
	}
	if rec.Conns != nil {
		r.Conns = ConnsAt(rec.Conns, ev, affected)
	}
	return r
}

// analyzeFlow reads one flow's samples (sorted by send time) across the event; ok is false
// when the flow sent nothing in the window. It also adds to the event's gap, first-survivor
// and source figures.
func analyzeFlow(samples []Sample, ev Event, affected map[string]bool, r *EventResult, before, after map[string]bool) (f FlowResult, ok bool) {
	f.Pod = samples[0].Pod
	f.Zone = samples[0].Zone
	var prevOK time.Time
	var firstOK *Sample
	firstFail, recovered := false, false // a request failed after the crash; firstOK follows it
	for i, s := range samples {
		if s.Sent.Before(ev.At) {
			if s.OK() {
				prevOK = s.Sent
				if ev.At.Sub(s.Sent) <= 3*time.Second {
					before[s.Source] = true
				}
				if ev.At.Sub(s.Sent) <= justBefore {
					f.SourceBefore = s.Source
				} else {
					f.SourceBefore = ""
				}
			}
			continue
		}
		if !s.Sent.Before(ev.End) {
			break
		}
		f.Requests++
		if !s.OK() {
			f.Failed++
			firstFail = true
			continue
		}
		// The first success after the crash, or, once a request failed, the first one after
		// that failure: a request still answered through the dying gateway must not end the
		// outage of a flow that fails next.
		if firstOK == nil || (firstFail && !recovered) {
			firstOK, recovered = &samples[i], firstFail
		}
		if !prevOK.IsZero() {
			r.LongestGap = max(r.LongestGap, s.Sent.Sub(prevOK))
		}
		prevOK = s.Sent
		if !affected[s.Source] && (r.FirstSurvivor == 0 || s.Sent.Sub(ev.At) < r.FirstSurvivor) {
			r.FirstSurvivor = s.Sent.Sub(ev.At)
		}
		if ev.End.Sub(s.Sent) <= 3*time.Second {
			after[s.Source] = true
		}
	}
	if f.Requests == 0 {
		return f, false
	}
	var why []string
	if f.Failed > 0 {
		why = append(why, "failed")
	}
	if affected[f.SourceBefore] {
		why = append(why, "via "+f.SourceBefore)
	}
	f.Affected, f.Why = len(why) > 0, strings.Join(why, ", ")
	if !f.Affected {
		return f, true
	}
	if firstOK != nil {
		f.Outage, f.Recovered, f.FirstSource = firstOK.Done().Sub(ev.At), true, firstOK.Source
	} else {
		f.Outage = ev.End.Sub(ev.At)
	}
	return f, true
}

// Settled returns when the gateway settled after at: the time of the first reading at or after
// at from which every reading satisfies whole and shows the same egress IP set and holders
// for at least stable. Zero when the series never settles that long. views must be in time
// order (ViewRecorder.Views).
func Settled(views []TimedView, at time.Time, stable time.Duration, whole func(GatewayView) bool) time.Time {
	var start time.Time
	var key string
	for _, tv := range views {
		if tv.At.Before(at) {
			continue
		}
		if !whole(tv.View) {
			start = time.Time{}
			continue
		}
		k := fmt.Sprint(tv.View.EgressIPs, tv.View.Holders)
		if start.IsZero() || k != key {
			start, key = tv.At, k
		}
		if tv.At.Sub(start) >= stable {
			return start
		}
	}
	return time.Time{}
}

// Summary is one kind of event over its trials.
type Summary struct {
	Name   string `json:"name"`
	Trials int    `json:"trials"`
	// NoAffected counts the trials in which no flow was affected; they are left out of the
	// outage percentiles.
	NoAffected    int `json:"noAffected"`
	AffectedFlows int `json:"affectedFlows"`
	// Outage percentiles are over the affected flows of every trial.
	OutageP50 time.Duration `json:"outageP50Ns"`
	OutageP99 time.Duration `json:"outageP99Ns"`
	OutageMax time.Duration `json:"outageMaxNs"`
	// Unrecovered counts affected flows with no success before their trial's End.
	Unrecovered int `json:"unrecovered"`
	Failed      int `json:"failed"`
	// FailedPerFlowMax is the most requests one flow lost in one trial.
	FailedPerFlowMax int `json:"failedPerFlowMax"`
	// Settle percentiles are over the trials with a SettledAt; Unsettled counts the others.
	SettleP50 time.Duration `json:"settleP50Ns"`
	SettleP99 time.Duration `json:"settleP99Ns"`
	Unsettled int           `json:"unsettled"`
	// Moves and MoveFailed: cloud moves accepted during the trials and the requests that
	// failed while they were under way.
	Moves             int    `json:"moves"`
	MoveFailed        int    `json:"moveFailed"`
	UndeliveredSource uint64 `json:"undeliveredSource"`
	IPSetChanged      int    `json:"ipSetChanged"`
	// Long-lived connections over the trials.
	ConnsThroughFailed           int `json:"connsThroughFailed"`
	ConnsThroughFailedSurvived   int `json:"connsThroughFailedSurvived"`
	ConnsThroughFailedSameSource int `json:"connsThroughFailedSameSource"`
	ConnsThroughSurvivors        int `json:"connsThroughSurvivors"`
	ConnsSurvivorsBroken         int `json:"connsSurvivorsBroken"`
	// ConnsSourceLost: connections whose own pod's node the event took down (counted apart).
	ConnsSourceLost int `json:"connsSourceLost"`
}

// Summarize sums up trials of one kind of event.
func Summarize(name string, results []EventResult) Summary {
	s := Summary{Name: name, Trials: len(results)}
	var outages, settles []time.Duration
	for _, r := range results {
		if r.NoAffected {
			s.NoAffected++
		}
		for _, f := range r.Flows {
			s.FailedPerFlowMax = max(s.FailedPerFlowMax, f.Failed)
			if !f.Affected {
				continue
			}
			s.AffectedFlows++
			outages = append(outages, f.Outage)
			if !f.Recovered {
				s.Unrecovered++
			}
		}
		s.Failed += r.Failed
		if r.SettledAt.IsZero() {
			s.Unsettled++
		} else {
			settles = append(settles, r.Settle)
		}
		s.Moves += len(r.Moves)
		s.MoveFailed += r.MoveFailed
		s.UndeliveredSource += r.UndeliveredSource
		if !r.SameIPSet {
			s.IPSetChanged++
		}
		if c := r.Conns; c != nil {
			s.ConnsThroughFailed += c.ThroughFailed
			s.ConnsThroughFailedSurvived += c.ThroughFailedSurvived
			s.ConnsThroughFailedSameSource += c.ThroughFailedSameSource
			s.ConnsThroughSurvivors += c.ThroughSurvivors
			s.ConnsSurvivorsBroken += c.SurvivorsBroken
			s.ConnsSourceLost += c.SourceLost
		}
	}
	s.OutageP50, s.OutageP99 = Percentile(outages, 50), Percentile(outages, 99)
	if len(outages) > 0 {
		s.OutageMax = slices.Max(outages)
	}
	s.SettleP50, s.SettleP99 = Percentile(settles, 50), Percentile(settles, 99)
	return s
}

// Report assembles the report of a run.
func (rec RunRecord) Report() *Report {
	samples := slices.Clone(rec.Samples)
	sortSamples(samples)
	rec.Samples = samples
	r := &Report{Interval: MonitorInterval, BySource: map[string]int{}, PublicOf: rec.PublicOf,
		IPSetBefore: rec.IPSetBefore, IPSetAfter: rec.IPSetAfter, Samples: samples, Moves: rec.Moves, Conns: rec.Conns}
	if len(samples) > 0 {
		r.Start, r.End = samples[0].Sent, samples[len(samples)-1].Sent
	}
	pods := map[string]bool{}
	for _, s := range samples {
		r.Requests++
		pods[s.Pod] = true
		if s.OK() {
			r.BySource[s.Source]++
		} else {
			r.Failed++
		}
	}
	r.Pods = slices.Sorted(keys(pods))
	byName := map[string][]EventResult{}
	var names []string
	for _, ev := range rec.Events {
		er := rec.Analyze(ev)
		r.Events = append(r.Events, er)
		if _, ok := byName[ev.Name]; !ok {
			names = append(names, ev.Name)
		}
		byName[ev.Name] = append(byName[ev.Name], er)
	}
	for _, n := range names {
		r.Summaries = append(r.Summaries, Summarize(n, byName[n]))
	}
	return r
}

// BuildReport assembles the report of a run from the monitors' samples and the events.
func BuildReport(samples []Sample, events []Event, ipsBefore, ipsAfter []string, public map[string]string) *Report {
	return RunRecord{Samples: samples, Events: events, IPSetBefore: ipsBefore, IPSetAfter: ipsAfter, PublicOf: public}.Report()
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
	fmt.Fprintln(tw, "EVENT\tNODES\tREQUESTS\tFAILED\tAFFECTED FLOWS\tOUTAGE (WORST FLOW)\tSETTLED\tFAILED IN MOVES\tUNDELIVERED SRC\tCONNS VIA FAILED SURVIVED\tCONNS VIA OTHERS BROKEN\tIP SET SAME")
	for _, e := range r.Events {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%v\n", e.Name, strings.Join(e.Nodes, ","), e.Requests, e.Failed,
			e.affectedText(), e.outageText(), e.settleText(), e.moveText(), e.UndeliveredSource, e.connsFailedText(), e.connsOthersText(), e.SameIPSet)
	}
	tw.Flush()
	if len(r.Summaries) > 0 && len(r.Summaries) < len(r.Events) {
		fmt.Fprintln(w)
		WriteSummaries(w, r.Summaries)
	}
	fmt.Fprintf(w, "\nEgress IP set before: %s\nEgress IP set after:  %s\n", strings.Join(r.IPSetBefore, " "), strings.Join(r.IPSetAfter, " "))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// WriteSummaries prints one line per kind of event: outage percentiles over the affected flows
// (crash-anchored), trials without an affected flow apart, settle time, failed requests during
// cloud moves, packets with an undelivered source, and the long-lived connections.
func WriteSummaries(w io.Writer, ss []Summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tTRIALS\tNO FLOW AFFECTED\tAFFECTED FLOWS\tOUTAGE P50\tP99\tMAX\tUNRECOVERED\tFAILED\tMAX PER FLOW\tSETTLE P50\tP99\tUNSETTLED\tMOVES\tFAILED IN MOVES\tUNDELIVERED SRC\tCONNS VIA FAILED SURVIVED\tSAME ADDR:PORT\tCONNS VIA OTHERS BROKEN\tIP SET CHANGED")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d/%d\t%d\t%d/%d\t%d\n",
			s.Name, s.Trials, s.NoAffected, s.AffectedFlows, fmtDur(s.OutageP50), fmtDur(s.OutageP99), fmtDur(s.OutageMax), s.Unrecovered,
			s.Failed, s.FailedPerFlowMax, fmtDur(s.SettleP50), fmtDur(s.SettleP99), s.Unsettled, s.Moves, s.MoveFailed, s.UndeliveredSource,
			s.ConnsThroughFailedSurvived, s.ConnsThroughFailed, s.ConnsThroughFailedSameSource, s.ConnsSurvivorsBroken, s.ConnsThroughSurvivors, s.IPSetChanged)
	}
	tw.Flush()
}

func (e EventResult) affectedText() string {
	if e.NoAffected {
		return fmt.Sprintf("none of %d", len(e.Flows))
	}
	return fmt.Sprintf("%d of %d", e.AffectedFlows, len(e.Flows))
}

func (e EventResult) outageText() string {
	if e.NoAffected {
		return "-"
	}
	for _, f := range e.Flows {
		if f.Affected && !f.Recovered {
			return ">" + fmtDur(e.Outage)
		}
	}
	return fmtDur(e.Outage)
}

func (e EventResult) settleText() string {
	if e.SettledAt.IsZero() {
		return "-"
	}
	return fmtDur(e.Settle)
}

func (e EventResult) moveText() string {
	if len(e.Moves) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(e.Moves))
	for _, m := range e.Moves {
		parts = append(parts, fmt.Sprintf("%s: %d", m.IP, m.Failed))
	}
	return strings.Join(parts, " ")
}

func (e EventResult) connsFailedText() string {
	if e.Conns == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%d same addr:port)", e.Conns.ThroughFailedSurvived, e.Conns.ThroughFailed, e.Conns.ThroughFailedSameSource)
}

func (e EventResult) connsOthersText() string {
	if e.Conns == nil {
		return "-"
	}
	if e.Conns.SourceLost > 0 {
		return fmt.Sprintf("%d/%d (%d apart: their pod's node lost)", e.Conns.SurvivorsBroken, e.Conns.ThroughSurvivors, e.Conns.SourceLost)
	}
	return fmt.Sprintf("%d/%d", e.Conns.SurvivorsBroken, e.Conns.ThroughSurvivors)
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

func badIf(bad bool) string {
	if bad {
		return " class=bad"
	}
	return ""
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
	fmt.Fprintf(w, "<p>%s → %s. One HTTP request every %s from each monitor pod (%s) to the echo server, each on a new connection. %d requests, <b>%d failed</b>.</p>\n",
		esc(r.Start.Format(time.RFC3339)), esc(r.End.Format("15:04:05")), r.Interval, esc(strings.Join(r.Pods, ", ")), r.Requests, r.Failed)
	w.WriteString(r.svg())
	w.WriteString("<h2>Requests per egress IP</h2><table><tr><th>egress IP seen by the echo server</th><th>requests</th><th>share</th></tr>\n")
	for _, src := range slices.Sorted(keys(r.BySource)) {
		fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%.1f%%</td></tr>\n", esc(src), r.BySource[src], 100*float64(r.BySource[src])/float64(max(r.Requests, 1)))
	}
	fmt.Fprintf(w, "<tr><td class=bad>failed</td><td>%d</td><td>%.1f%%</td></tr></table>\n", r.Failed, 100*float64(r.Failed)/float64(max(r.Requests, 1)))
	w.WriteString("<h2>Events</h2><table><tr><th>event</th><th>nodes</th><th>requests</th><th>failed</th><th>affected flows</th><th>outage (worst affected flow)</th><th>settled</th><th>failed during cloud moves</th><th>packets with an undelivered source</th><th>connections via the failed gateway surviving</th><th>connections via other gateways broken</th><th>egress IPs before → after</th></tr>\n")
	for _, e := range r.Events {
		fmt.Fprintf(w, "<tr><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td%s>%d</td><td>%s</td><td%s>%s</td><td>%s → %s%s</td></tr>\n",
			esc(e.Name), esc(strings.Join(e.Nodes, ", ")), e.Requests, e.Failed, esc(e.affectedText()), esc(e.outageText()), esc(e.settleText()),
			esc(e.moveText()), badIf(e.UndeliveredSource > 0), e.UndeliveredSource, esc(e.connsFailedText()),
			badIf(e.Conns != nil && e.Conns.SurvivorsBroken > 0), esc(e.connsOthersText()),
			esc(strings.Join(e.IPSetBefore, " ")), esc(strings.Join(e.IPSetAfter, " ")), map[bool]string{true: "", false: " <b class=bad>changed</b>"}[e.SameIPSet])
	}
	w.WriteString("</table>\n<p>Outage, per affected flow (one flow is one monitor pod's client): from the crash instant (the event's first destructive action) to the completion of the flow's first successful request sent after it. A flow is affected when one of its requests failed after the crash or its traffic just before it left through an egress IP the event's nodes held; an event with no affected flow has no outage figure and is counted apart. Settled: crash → the egress IP set and its holders whole again and stable. Targets (DESIGN.md §8): p99 ≤ 0.5 s for one gateway, ≤ 1 s for three of four, 0 failed requests for a drain, the same egress IP set, 0 packets with an undelivered source, no connection through a surviving gateway broken. Published figures to beat: 3 s, up to 6 s in batches.</p>\n")
	if len(r.Summaries) > 0 && len(r.Summaries) < len(r.Events) {
		w.WriteString("<h2>Per kind of event</h2><table><tr><th>event</th><th>trials</th><th>no flow affected</th><th>affected flows</th><th>outage p50</th><th>p99</th><th>max</th><th>settle p50</th><th>p99</th><th>failed during moves</th><th>undelivered source</th><th>conns via failed surviving</th><th>conns via others broken</th></tr>\n")
		for _, s := range r.Summaries {
			fmt.Fprintf(w, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%d/%d</td><td>%d/%d</td></tr>\n",
				esc(s.Name), s.Trials, s.NoAffected, s.AffectedFlows, fmtDur(s.OutageP50), fmtDur(s.OutageP99), fmtDur(s.OutageMax),
				fmtDur(s.SettleP50), fmtDur(s.SettleP99), s.MoveFailed, s.UndeliveredSource,
				s.ConnsThroughFailedSurvived, s.ConnsThroughFailed, s.ConnsSurvivorsBroken, s.ConnsThroughSurvivors)
		}
		w.WriteString("</table>\n")
	}
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
		w.WriteString("<h2>Failed requests</h2><table><tr><th>time</th><th>pod</th><th>#</th><th>error</th></tr>\n")
		for i, s := range fails {
			if i == 500 {
				fmt.Fprintf(w, "<tr><td colspan=4>… %d more in report.json</td></tr>\n", len(fails)-i)
				break
			}
			fmt.Fprintf(w, "<tr><td>%s</td><td>%s</td><td>%d</td><td>%s</td></tr>\n", s.Sent.Format("15:04:05.000"), esc(s.Pod), s.Seq, esc(s.Err))
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
	// Cloud moves: a band from the cloud accepting the call to the fabric delivering the
	// address, so a cloud delay shows as the time between the failure and the new holder's
	// traffic. Undelivered moves run to the end of the plot.
	for _, m := range r.Moves {
		if m.Accepted.Before(r.Start) || m.Accepted.After(r.End) {
			continue
		}
		end := m.Delivered
		if end.IsZero() || end.After(r.End) {
			end = r.End
		}
		x0, x1 := x(m.Accepted.Sub(r.Start)), x(end.Sub(r.Start))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#17becf" opacity="0.25"><title>%s: accepted %s, delivered %s</title></rect>`+"\n",
			x0, top, math.Max(x1-x0, 1), ph, html.EscapeString(m.IP), m.Accepted.Format("15:04:05.000"), html.EscapeString(fmtTime(m.Delivered)))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="6" fill="#17becf"/><text x="%.1f" y="%.1f" fill="#0e7c86">move %s %s</text>`+"\n",
			x0, top+ph-6, math.Max(x1-x0, 1), x0+3, top+ph-10, html.EscapeString(m.IP), fmtDur(end.Sub(m.Accepted)))
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
	if len(r.Moves) > 0 {
		yl := top + float64(len(series))*16
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="#17becf" opacity="0.5"/><text x="%.0f" y="%.0f">cloud move</text>`+"\n",
			left+pw+10, yl, left+pw+24, yl+9)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "not delivered"
	}
	return t.Format("15:04:05.000")
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
