package gcpsim

import (
	"fmt"
	"strings"
)

// filter is a parsed list filter: the subset of Compute's filter grammar (the `filter`
// parameter of every list method) that the simulator can evaluate for sure: comparisons
// `field = literal` and `field != literal`, on their own or each in parentheses, joined by
// AND, OR or juxtaposition (AND). A literal is bare or double-quoted. Compute also accepts
// `:` (has), `>`/`<`, and the older `eq`/`ne` regular-expression form; the simulator refuses
// those with 400 rather than ignore them, and refuses AND and OR mixed at one level, whose
// precedence the reference does not state.
type filter struct {
	or   bool // the terms are OR-ed (else AND-ed)
	cmp  []comparison
	subs []*filter
}

type comparison struct {
	field, value string
	negate       bool
}

// parseFilter parses s; an empty filter matches everything.
func parseFilter(s string) (*filter, error) {
	p := &filterParser{in: s}
	f, err := p.expr()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos != len(p.in) {
		return nil, fmt.Errorf("unexpected %q at %d", p.in[p.pos:], p.pos)
	}
	return f, nil
}

type filterParser struct {
	in  string
	pos int
}

func (p *filterParser) space() {
	for p.pos < len(p.in) && p.in[p.pos] == ' ' {
		p.pos++
	}
}

// keyword consumes AND or OR followed by a space or '('.
func (p *filterParser) keyword() string {
	for _, k := range []string{"AND", "OR"} {
		if strings.HasPrefix(p.in[p.pos:], k) {
			rest := p.in[p.pos+len(k):]
			if rest == "" || rest[0] == ' ' || rest[0] == '(' {
				p.pos += len(k)
				return k
			}
		}
	}
	return ""
}

func (p *filterParser) expr() (*filter, error) {
	f := &filter{}
	joiner := ""
	for {
		p.space()
		if p.pos == len(p.in) || p.in[p.pos] == ')' {
			if len(f.cmp)+len(f.subs) == 0 && p.pos < len(p.in) {
				return nil, fmt.Errorf("empty parentheses at %d", p.pos)
			}
			if joiner == "OR" {
				f.or = true
			}
			return f, nil
		}
		if len(f.cmp)+len(f.subs) > 0 {
			k := p.keyword()
			if k == "" {
				k = "AND"
			}
			if joiner != "" && joiner != k {
				return nil, fmt.Errorf("AND and OR mixed without parentheses at %d", p.pos)
			}
			joiner = k
			p.space()
		}
		if p.pos < len(p.in) && p.in[p.pos] == '(' {
			p.pos++
			sub, err := p.expr()
			if err != nil {
				return nil, err
			}
			if p.pos >= len(p.in) || p.in[p.pos] != ')' {
				return nil, fmt.Errorf("missing ) at %d", p.pos)
			}
			p.pos++
			f.subs = append(f.subs, sub)
			continue
		}
		c, err := p.comparison()
		if err != nil {
			return nil, err
		}
		f.cmp = append(f.cmp, c)
	}
}

func (p *filterParser) comparison() (comparison, error) {
	start := p.pos
	for p.pos < len(p.in) && (isFieldChar(p.in[p.pos])) {
		p.pos++
	}
	c := comparison{field: p.in[start:p.pos]}
	if c.field == "" {
		return c, fmt.Errorf("want a field name at %d", start)
	}
	p.space()
	switch {
	case strings.HasPrefix(p.in[p.pos:], "!="):
		c.negate = true
		p.pos += 2
	case strings.HasPrefix(p.in[p.pos:], "="):
		p.pos++
	default:
		return c, fmt.Errorf("want = or != after %q at %d", c.field, p.pos)
	}
	p.space()
	if p.pos < len(p.in) && p.in[p.pos] == '"' {
		end := strings.IndexByte(p.in[p.pos+1:], '"')
		if end < 0 {
			return c, fmt.Errorf("unterminated string at %d", p.pos)
		}
		c.value = p.in[p.pos+1 : p.pos+1+end]
		p.pos += end + 2
		return c, nil
	}
	start = p.pos
	for p.pos < len(p.in) && p.in[p.pos] != ' ' && p.in[p.pos] != ')' && p.in[p.pos] != '(' {
		p.pos++
	}
	c.value = p.in[start:p.pos]
	if c.value == "" {
		return c, fmt.Errorf("want a value for %q at %d", c.field, p.pos)
	}
	return c, nil
}

func isFieldChar(b byte) bool {
	return b == '.' || b == '_' || b == '-' || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')
}

// match evaluates f with field giving a resource's value of a field name and whether it has
// it (a missing field equals nothing).
func (f *filter) match(field func(string) (string, bool)) bool {
	if f == nil {
		return true
	}
	n := 0
	for _, c := range f.cmp {
		v, ok := field(c.field)
		if (ok && v == c.value) != c.negate {
			n++
		}
	}
	for _, s := range f.subs {
		if s.match(field) {
			n++
		}
	}
	if f.or {
		return n > 0
	}
	return n == len(f.cmp)+len(f.subs)
}

// unknownField returns the first field f compares that known does not accept, or "".
func (f *filter) unknownField(known func(string) bool) string {
	for _, c := range f.cmp {
		if !known(c.field) {
			return c.field
		}
	}
	for _, s := range f.subs {
		if u := s.unknownField(known); u != "" {
			return u
		}
	}
	return ""
}

// listFilter parses a list call's filter parameter for a resource whose fields known accepts:
// 400 invalid for what the simulator cannot evaluate.
func listFilter(s string, known func(string) bool) (*filter, *apiError) {
	f, err := parseFilter(s)
	if err == nil {
		if u := f.unknownField(known); u != "" {
			err = fmt.Errorf("unknown field %q", u)
		}
	}
	if err != nil {
		return nil, errf(400, "invalid", "Invalid value for field 'filter': '%s'. Invalid list filter expression: %v.", s, err)
	}
	return f, nil
}
