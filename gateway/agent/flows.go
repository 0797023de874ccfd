package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
)

// flowObserver is the Dataplane's optional flow observation (*dataplane.Dataplane has it).
type flowObserver interface {
	ObserveFlows(ctx context.Context, opts dataplane.ObserveOptions, fn func(dataplane.Flow)) error
}

var _ flowObserver = (*dataplane.Dataplane)(nil)

// FlowHub serves the node's flow stream (contract.FlowsPath, egressctl observe) and, run by
// the agent, reads the datapath's flow events only while at least one client watches: with
// nobody subscribed the datapath writes no event.
type FlowHub struct {
	mu   sync.Mutex
	subs map[*flowSub]struct{}
	kick chan struct{} // the set of subscribers changed
}

// NewFlowHub returns a hub; the agent runs it (Config.Flows) and the manager's metrics server
// serves it (ManagerOptions.Flows).
func NewFlowHub() *FlowHub {
	return &FlowHub{subs: map[*flowSub]struct{}{}, kick: make(chan struct{}, 1)}
}

// flowBuffer is how many records a slow client may lag before records are dropped for it
// (the datapath never waits for a reader).
const flowBuffer = 1024

type flowSub struct {
	filter flowFilter
	sample uint32
	ch     chan contract.FlowRecord
}

// flowFilter selects the records a client asked for.
type flowFilter struct {
	pod       string     // namespace/name
	podIP     netip.Addr // or the pod's address
	namespace string
	drops     bool
}

func (f flowFilter) match(r contract.FlowRecord) bool {
	switch {
	case f.drops && r.Verdict != contract.FlowDropped:
		return false
	case f.pod != "" && r.Pod != f.pod:
		return false
	case f.podIP.IsValid() && r.PodAddr() != f.podIP:
		return false
	case f.namespace != "" && !strings.HasPrefix(r.Pod, f.namespace+"/"):
		return false
	}
	return true
}

func (h *FlowHub) changed() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *FlowHub) subscribe(s *flowSub) {
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.changed()
}

func (h *FlowHub) unsubscribe(s *flowSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.changed()
}

// sample is the smallest sampling any subscriber asks for (0: nobody subscribed).
func (h *FlowHub) sample() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n uint32
	for s := range h.subs {
		if n == 0 || s.sample < n {
			n = s.sample
		}
	}
	return n
}

func (h *FlowHub) publish(r contract.FlowRecord) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.filter.match(r) {
			continue
		}
		select {
		case s.ch <- r:
		default: // the client lags: it misses this record
		}
	}
}

// run observes the datapath while anyone subscribes, until ctx ends. It owns the reader
// goroutine's lifetime: ObserveFlows runs in this goroutine, with a context cancelled when
// the last subscriber leaves or the sampling changes.
func (h *FlowHub) run(ctx context.Context, dp flowObserver, record func(dataplane.Flow) contract.FlowRecord) {
	logger := log.FromContext(ctx)
	for {
		sample := h.sample()
		if sample == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.kick:
				continue
			}
		}
		octx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- dp.ObserveFlows(octx, dataplane.ObserveOptions{Sample: sample}, func(f dataplane.Flow) { h.publish(record(f)) })
		}()
		logger.V(1).Info("observing flows", "sample", sample)
		var err error
	wait:
		for {
			select {
			case <-ctx.Done():
				cancel()
				if err := <-done; err != nil {
					logger.V(1).Info("flow observation ended with the agent", "error", err.Error())
				}
				return
			case <-h.kick:
				if h.sample() != sample {
					cancel()
					err = <-done
					break wait
				}
			case err = <-done:
				break wait
			}
		}
		cancel()
		if err != nil {
			// The datapath is not loaded yet, or its ring buffer cannot be read: retry
			// while clients wait.
			logger.Error(err, "observing flows")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// ServeHTTP streams flow records as newline-delimited JSON until the client goes away.
func (h *FlowHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s := &flowSub{sample: contract.DefaultFlowSample, ch: make(chan contract.FlowRecord, flowBuffer)}
	if v := q.Get(contract.FlowsSampleParam); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			http.Error(w, "sample: want a positive integer (1 in N packets)", http.StatusBadRequest)
			return
		}
		s.sample = uint32(n)
	}
	if v := q.Get(contract.FlowsPodParam); v != "" {
		if ip, err := netip.ParseAddr(v); err == nil {
			s.filter.podIP = ip.Unmap()
		} else {
			s.filter.pod = v
		}
	}
	s.filter.namespace = q.Get(contract.FlowsNamespaceParam)
	s.filter.drops = q.Get(contract.FlowsDropsParam) == "true"
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	h.subscribe(s)
	defer h.unsubscribe(s)
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case rec := <-s.ch:
			if err := enc.Encode(rec); err != nil {
				return
			}
			if flusher != nil && len(s.ch) == 0 {
				flusher.Flush()
			}
		}
	}
}

// flowRecord names the ids of an observed flow with the last computed state.
func (a *Agent) flowRecord(f dataplane.Flow) contract.FlowRecord {
	a.mu.Lock()
	groups, gateways := a.last.GroupNames, a.last.GatewayNames
	a.mu.Unlock()
	name := func(m map[uint32]string) func(uint32) string {
		return func(id uint32) string {
			if n, ok := m[id]; ok {
				return n
			}
			return strconv.FormatUint(uint64(id), 10)
		}
	}
	return f.Record(a.cfg.NodeName, name(groups), name(gateways))
}
