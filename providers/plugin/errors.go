package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/providers"
)

var kindNames = map[string]providers.ErrorKind{
	providers.KindNotFound.String():          providers.KindNotFound,
	providers.KindCapacityExhausted.String(): providers.KindCapacityExhausted,
	providers.KindThrottled.String():         providers.KindThrottled,
	providers.KindConflict.String():          providers.KindConflict,
	providers.KindPermission.String():        providers.KindPermission,
}

// statusOf is the HTTP status of an error kind; the body's kind is authoritative, the status
// lets generic HTTP tooling (proxies, logs) tell the cases apart.
func statusOf(k providers.ErrorKind) int {
	switch k {
	case providers.KindNotFound:
		return 404
	case providers.KindCapacityExhausted:
		return 507
	case providers.KindThrottled:
		return 429
	case providers.KindConflict:
		return 409
	case providers.KindPermission:
		return 403
	}
	return 500
}

func retryAfter(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// errorOf turns a non-2xx answer into an error, a providers.Error when the body's kind is one.
func errorOf(status string, body []byte) error {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) != nil || eb.Error.Message == "" {
		return fmt.Errorf("plugin answered %s: %s", status, strings.TrimSpace(string(body)))
	}
	msg := errors.New(eb.Error.Message)
	if k, ok := kindNames[eb.Error.Kind]; ok {
		return &providers.Error{Kind: k, Op: "plugin " + eb.Error.Op, Code: eb.Error.Code, RetryAfter: retryAfter(eb.Error.RetryAfterMS), Err: msg}
	}
	return fmt.Errorf("plugin %s: %w", eb.Error.Op, msg)
}

func writeError(w http.ResponseWriter, err error) {
	we := WireError{Message: err.Error()}
	var pe *providers.Error
	if errors.As(err, &pe) {
		we.Kind, we.Op, we.Code, we.RetryAfterMS = pe.Kind.String(), pe.Op, pe.Code, pe.RetryAfter.Milliseconds()
		if pe.Err != nil {
			we.Message = pe.Err.Error()
		}
	}
	if we.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((we.RetryAfterMS+999)/1000, 10))
	}
	writeJSON(w, statusOf(providers.KindOf(err)), ErrorBody{Error: we})
}
