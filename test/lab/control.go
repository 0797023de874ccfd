package lab

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// State is what a running `egressd-lab up` writes to its directory for the other lab
// commands (status, reboot, down) and for people (the kubeconfig).
type State struct {
	PID        int    `json:"pid"`
	Control    string `json:"control"` // 127.0.0.1:port of the control API
	Kubeconfig string `json:"kubeconfig"`
	WorkDir    string `json:"workDir"`
}

const stateFile = "state.json"

// ServeControl writes dir/state.json and dir/kubeconfig and serves the control API on loopback
// until ctx ends or a client asks for /down, which calls down. It removes the state when it
// returns.
func (l *Lab) ServeControl(ctx context.Context, dir string, down func()) (State, func() error, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return State{}, nil, err
	}
	kc, err := os.ReadFile(l.Kubeconfig)
	if err != nil {
		return State{}, nil, err
	}
	st := State{PID: os.Getpid(), Kubeconfig: filepath.Join(dir, "kubeconfig"), WorkDir: l.workDir}
	if st.Kubeconfig, err = filepath.Abs(st.Kubeconfig); err != nil {
		return State{}, nil, err
	}
	if err := os.WriteFile(st.Kubeconfig, kc, 0o600); err != nil {
		return State{}, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return State{}, nil, err
	}
	st.Control = ln.Addr().String()
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, stateFile), b, 0o644); err != nil {
		ln.Close()
		return State{}, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { l.WriteStatus(r.Context(), w) })
	mux.HandleFunc("POST /reboot", func(w http.ResponseWriter, r *http.Request) {
		down, err := time.ParseDuration(r.URL.Query().Get("down"))
		if err != nil {
			down = 10 * time.Second
		}
		nodes := strings.Split(r.URL.Query().Get("node"), ",")
		if err := l.Crash(r.Context(), nodes...); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The reboot goes on after the reply: restore in the background, owned by the lab.
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(down):
			}
			_ = l.Restore(l.ctx, nodes...)
		}()
		fmt.Fprintf(w, "rebooting %s: down for %s\n", strings.Join(nodes, ","), down)
	})
	for _, op := range []string{"drain", "undrain"} {
		mux.HandleFunc("POST /"+op, func(w http.ResponseWriter, r *http.Request) {
			node := r.URL.Query().Get("node")
			if err := l.SetGatewayLabel(r.Context(), node, op == "undrain"); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%s %s\n", op, node)
		})
	}
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "tearing down")
		down()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := func() error {
		err := srv.Close()
		return errors.Join(err, os.Remove(filepath.Join(dir, stateFile)), os.Remove(st.Kubeconfig))
	}
	return st, stop, nil
}

// ReadState reads the state of the lab running from dir.
func ReadState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("no lab running from %s (no %s): start one with `egressd-lab up`", dir, stateFile)
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	if syscall.Kill(st.PID, 0) != nil {
		return st, fmt.Errorf("the lab of %s (pid %d) is gone; `egressd-lab down` cleans up after it", dir, st.PID)
	}
	return st, nil
}

// Call sends a request to the control API of the lab running from dir.
func Call(ctx context.Context, dir, method, path string) (string, error) {
	st, err := ReadState(dir)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+st.Control+path, nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s", method, path, strings.TrimSpace(string(b)))
	}
	return string(b), err
}

// Down stops the lab running from dir and waits until its process is gone; with a crashed lab
// it sweeps its leftovers.
func Down(ctx context.Context, dir string) error {
	st, err := ReadState(dir)
	if err != nil {
		if st.PID == 0 {
			return err
		}
		_ = os.Remove(filepath.Join(dir, stateFile))
		return Sweep()
	}
	if _, err := Call(ctx, dir, http.MethodPost, "/down"); err != nil {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
	}
	for syscall.Kill(st.PID, 0) == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// WriteStatus prints the lab: nodes, processes, the gateway's status and the router's view.
func (l *Lab) WriteStatus(ctx context.Context, w io.Writer) {
	fmt.Fprintf(w, "kubeconfig: %s\nsimulator:  http://%s/admin/state\nlogs:       %s\n", l.Kubeconfig, l.SimAddr, filepath.Join(l.workDir, "logs"))
	if l.controller != nil {
		fmt.Fprintf(w, "controller: running=%v (in %s, %s)\n", l.ControllerRunning(), l.CP.Name, l.CP.IP)
	}
	routes, nat, rerr := l.Routes()
	held := map[string][]string{}
	for ip, n := range routes {
		s := ip.String()
		if p, ok := nat[ip]; ok {
			s += "→" + p.String()
		}
		held[n] = append(held[n], s)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tZONE\tUNDERLAY IP\tINSTANCE\tGATEWAY\tAGENT\tDOWN\tCLOUD HOLDS (→ ELASTIC IP)")
	for _, n := range l.Nodes {
		ips := held[n.Name]
		slices.Sort(ips)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%v\t%v\t%s\n", n.Name, n.Zone.Name, n.IP, cmp.Or(n.Instance.ID, n.ProviderID), n.Gateway,
			l.AgentRunning(n.Name), n.isDown(), strings.Join(ips, " "))
	}
	tw.Flush()
	if l.fabric != nil {
		_, nat := l.fabric.Routes()
		for _, natIP := range slices.Sorted(maps.Keys(nat)) {
			fmt.Fprintf(w, "access config: %s → %s\n", nat[natIP], natIP)
		}
	}
	if rerr != nil {
		fmt.Fprintf(w, "router: last sync error: %v\n", rerr)
	}
	v, err := l.View(ctx)
	if err != nil {
		fmt.Fprintf(w, "\nEgressGateway %s: %v\n", GatewayGroup, err)
		return
	}
	fmt.Fprintf(w, "\nEgressGateway %s: %s\nholders: %s\n", GatewayGroup, v, holdersString(v))
}
