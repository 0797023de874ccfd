package plugin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"

	"github.com/egressd/egressd/providers"
)

// HandlerOption configures NewHandler.
type HandlerOption func(*handler)

// WithToken sets the bearer token the handler requires ("Authorization: Bearer <token>").
// It is required: a handler without one refuses every request.
func WithToken(token string) HandlerOption { return func(h *handler) { h.token = token } }

type handler struct {
	p     providers.Provider
	token string
	mux   *http.ServeMux
}

// NewHandler serves p over the plugin protocol, to clients that present the token of
// WithToken. Serve it on a unix socket (a sidecar of the controller) or with TLS
// (http.ListenAndServeTLS); the client refuses plain HTTP over TCP.
func NewHandler(p providers.Provider, opts ...HandlerOption) http.Handler {
	h := &handler{p: p, mux: http.NewServeMux()}
	for _, o := range opts {
		o(h)
	}
	h.mux.HandleFunc("GET "+Base+"/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Info{Name: p.Name(), Versions: []string{Version}})
	})
	v := Base + "/" + Version
	route(h.mux, v+PathDiscoverNode, func(ctx context.Context, in *providers.NodeRef) (any, error) { return p.DiscoverNode(ctx, *in) })
	route(h.mux, v+PathEnsureIP, func(ctx context.Context, in *providers.EnsureRequest) (any, error) { return p.EnsureIP(ctx, *in) })
	route(h.mux, v+PathMoveIP, func(ctx context.Context, in *providers.MoveRequest) (any, error) { return p.MoveIP(ctx, *in) })
	route(h.mux, v+PathReleaseIP, func(ctx context.Context, in *providers.ReleaseRequest) (any, error) {
		return struct{}{}, p.ReleaseIP(ctx, *in)
	})
	route(h.mux, v+PathListOwned, func(ctx context.Context, in *ListOwnedRequest) (any, error) {
		res, err := p.ListOwned(ctx, in.Cluster)
		if res == nil {
			res = []providers.OwnedResource{}
		}
		return ListOwnedResponse{Resources: res}, err
	})
	route(h.mux, v+PathReleaseOwned, func(ctx context.Context, in *providers.OwnedResource) (any, error) {
		return struct{}{}, p.ReleaseOwned(ctx, *in)
	})
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.token == "" {
		writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: WireError{Kind: providers.KindPermission.String(), Message: "the plugin server has no token configured (plugin.WithToken); it serves no one"}})
		return
	}
	want := "Bearer " + h.token
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
		writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: WireError{Kind: providers.KindPermission.String(), Message: "missing or wrong bearer token"}})
		return
	}
	h.mux.ServeHTTP(w, r)
}

func route[T any](mux *http.ServeMux, path string, fn func(context.Context, *T) (any, error)) {
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		in := new(T)
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		if err := dec.Decode(in); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: WireError{Message: "decoding request: " + err.Error()}})
			return
		}
		out, err := fn(r.Context(), in)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
