package plugin_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/plugin"
	"github.com/egressd/egressd/providers/static"
)

func TestConfigStrict(t *testing.T) {
	sp, err := static.New(t.Context(), "pool", static.Config{Pools: []static.Pool{{Zone: "z", Addresses: []string{"192.0.2.10"}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(plugin.NewHandler(sp))
	t.Cleanup(srv.Close)
	conformance.RunConfig(t, conformance.Config{
		Parse:      func(raw json.RawMessage) error { _, err := plugin.ParseConfig(raw); return err },
		Construct:  plugin.Constructor,
		Valid:      `{"clusterName":"c1","endpoint":"` + srv.URL + `","token":""}`,
		WrongTypes: map[string]string{"endpoint": `8080`, "token": `{"secret":"x"}`},
		Required:   []string{"clusterName", "endpoint"},
	})
}
