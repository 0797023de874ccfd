package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
)

// DecodeConfig parses a provider's JSON configuration object into cfg, a pointer to the
// provider's Config struct, strictly: a field the struct does not declare, a value of the
// wrong type or a bad value (a duration that does not parse), and a missing required field
// are errors that name the field. Field names match case-insensitively, as encoding/json's
// do. A field is required when its struct tag carries `config:"required"`; it must be present
// and not zero. An empty raw is an empty object.
func DecodeConfig(typ string, raw json.RawMessage, cfg any) error {
	if err := decodeConfig(raw, cfg); err != nil {
		return fmt.Errorf("parsing %s provider configuration: %w", typ, err)
	}
	return nil
}

// ConstructorOf returns the registry's entry for a provider type whose configuration is a C:
// the raw configuration parsed strictly by DecodeConfig, then built by build under the
// configured name.
func ConstructorOf[C any](typ string, build func(ctx context.Context, name string, cfg C) (Provider, error)) Constructor {
	return func(ctx context.Context, name string, raw json.RawMessage) (Provider, error) {
		var cfg C
		if err := DecodeConfig(typ, raw, &cfg); err != nil {
			return nil, err
		}
		return build(ctx, name, cfg)
	}
}

// Prepare begins every provider's New: it checks the configured name (the provider's
// identity), applies the configuration's defaults (when C has a Defaults method) and applies
// the options.
func Prepare[C any, O any, F ~func(*O)](typ, name string, cfg C, opts []F) (C, O, error) {
	var o O
	if err := CheckName(typ, name); err != nil {
		return cfg, o, err
	}
	if d, ok := any(cfg).(interface{ Defaults() C }); ok {
		cfg = d.Defaults()
	}
	for _, f := range opts {
		f(&o)
	}
	return cfg, o, nil
}

func decodeConfig(raw json.RawMessage, cfg any) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("decoding into %T: want a pointer to a struct", cfg)
	}
	v = v.Elem()
	fields := configFields(v.Type())
	var obj map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &obj); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return fmt.Errorf("got a JSON %s, want an object", te.Value)
			}
			return err
		}
	}
	set := map[int]string{}
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		val := obj[key]
		i := fieldIndex(fields, key)
		if i < 0 {
			return fmt.Errorf("unknown field %q (known: %s)", key, knownFields(fields))
		}
		if prev, dup := set[i]; dup {
			return fmt.Errorf("fields %q and %q both set %q", prev, key, fields[i].name)
		}
		set[i] = key
		dec := json.NewDecoder(bytes.NewReader(val))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v.Field(fields[i].index).Addr().Interface()); err != nil {
			return fmt.Errorf("field %q: %w", fields[i].name, fieldError(err))
		}
	}
	for _, f := range fields {
		if f.required && v.Field(f.index).IsZero() {
			return fmt.Errorf("missing required field %q", f.name)
		}
	}
	return nil
}

type configField struct {
	name     string
	index    int
	required bool
}

func configFields(t reflect.Type) []configField {
	var out []configField
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out = append(out, configField{name: name, index: i, required: sf.Tag.Get("config") == "required"})
	}
	return out
}

func fieldIndex(fields []configField, key string) int {
	for i, f := range fields {
		if f.name == key {
			return i
		}
	}
	for i, f := range fields {
		if strings.EqualFold(f.name, key) {
			return i
		}
	}
	return -1
}

func knownFields(fields []configField) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

// fieldError says what is wrong with a field's value in words that do not repeat the Go
// type's name where encoding/json gives it.
func fieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := ""
		if te.Field != "" {
			where = " at " + te.Field
		}
		return fmt.Errorf("got a JSON %s%s, want %s", te.Value, where, te.Type)
	}
	return err
}

// Duration is a time.Duration spelled as a Go duration string in JSON ("2s", "150ms").
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "2s"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
