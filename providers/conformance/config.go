package conformance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/egressd/egressd/providers"
)

// Config describes a provider's configuration for RunConfig, the strictness half of the
// suite: every provider's registry entry parses its JSON configuration with
// providers.DecodeConfig (providers.ConstructorOf), so that an unknown field, a value of the
// wrong type or a missing required field fails with an error naming the field, before any
// cloud is reached; and the provider it builds is named by the configured name.
type Config struct {
	// Construct is the provider's Constructor.
	Construct providers.Constructor
	// Valid is a valid configuration object that sets every field of WrongTypes and Required,
	// with which Construct succeeds without a cloud (endpoints of local servers, no metadata
	// lookups).
	Valid string
	// WrongTypes maps fields of Valid to a JSON value of the wrong type for them.
	WrongTypes map[string]string
	// Required lists the required fields.
	Required []string
}

// RunConfig runs the configuration cases.
func RunConfig(t *testing.T, c Config) {
	var valid map[string]json.RawMessage
	if err := json.Unmarshal([]byte(c.Valid), &valid); err != nil {
		t.Fatalf("Valid is not a JSON object: %v", err)
	}
	// The configured name is the provider's identity.
	p, err := c.Construct(context.Background(), "conformance-name", json.RawMessage(c.Valid))
	if err != nil {
		t.Fatalf("Constructor rejected the valid configuration: %v", err)
	}
	if p.Name() != "conformance-name" {
		t.Errorf("Name() = %q, want the configured name %q", p.Name(), "conformance-name")
	}
	if _, err := c.Construct(context.Background(), "", json.RawMessage(c.Valid)); err == nil {
		t.Error("Constructor accepted an empty name")
	}
	with := func(field, value string) json.RawMessage {
		m := map[string]json.RawMessage{}
		for k, v := range valid {
			m[k] = v
		}
		if value == "" {
			delete(m, field)
		} else {
			m[field] = json.RawMessage(value)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bad := func(t *testing.T, raw json.RawMessage, field string) {
		t.Helper()
		// A cancelled context: a constructor that accepted raw fails at its first call
		// instead of waiting for a cloud, and its error then names no field.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Construct(ctx, "conformance", raw)
		if err == nil {
			t.Errorf("accepted %s", raw)
		} else if !strings.Contains(err.Error(), `"`+field+`"`) {
			t.Errorf("error does not name %q: %v", field, err)
		}
	}
	t.Run("UnknownField", func(t *testing.T) { bad(t, with("bogusField", `1`), "bogusField") })
	for field, value := range c.WrongTypes {
		if _, ok := valid[field]; !ok {
			t.Fatalf("WrongTypes names %q, which Valid does not set", field)
		}
		t.Run("WrongType/"+field, func(t *testing.T) { bad(t, with(field, value), field) })
	}
	for _, field := range c.Required {
		if _, ok := valid[field]; !ok {
			t.Fatalf("Required names %q, which Valid does not set", field)
		}
		t.Run("Missing/"+field, func(t *testing.T) { bad(t, with(field, ""), field) })
	}
}
