package providers

import (
	"errors"
	"fmt"
	"time"
)

// ErrorKind classifies provider errors by what the coordinator does about them.
type ErrorKind int

const (
	// KindNotFound: the resource does not exist (instance, interface, address). The
	// coordinator re-plans.
	KindNotFound ErrorKind = iota + 1
	// KindCapacityExhausted: no room (per-interface IP limit, interface limit, subnet full,
	// public IP quota). The coordinator places elsewhere or reports CapacityExhausted.
	KindCapacityExhausted
	// KindThrottled: the cloud rate-limited us past the retry budget. Retry after RetryAfter.
	KindThrottled
	// KindConflict: the state changed under us (address held elsewhere, stale fingerprint
	// past retries, concurrent modification). Re-read and retry.
	KindConflict
	// KindPermission: the credentials may not do this, or the resource is not ours.
	KindPermission
)

func (k ErrorKind) String() string {
	switch k {
	case KindNotFound:
		return "NotFound"
	case KindCapacityExhausted:
		return "CapacityExhausted"
	case KindThrottled:
		return "Throttled"
	case KindConflict:
		return "Conflict"
	case KindPermission:
		return "Permission"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error is a classified provider error. Errors a provider cannot classify are returned as
// they are (wrapped with the operation).
type Error struct {
	Kind ErrorKind
	// Op names the operation, such as "assigning 10.0.1.5 to eni-0abc".
	Op string
	// Code is the cloud's error code, when there is one (PrivateIpAddressLimitExceeded...).
	Code string
	// RetryAfter is the cloud's hint for throttling, zero when none.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	msg := e.Op + ": " + e.Kind.String()
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

var errUnknownProvider = errors.New("no provider implementation registered for this type")

// KindOf returns the kind of err, or 0 when err is not a classified provider error.
func KindOf(err error) ErrorKind {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Kind
	}
	return 0
}

// IsNotFound reports whether err is a NotFound provider error.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }

// IsCapacityExhausted reports whether err is a CapacityExhausted provider error.
func IsCapacityExhausted(err error) bool { return KindOf(err) == KindCapacityExhausted }

// IsThrottled reports whether err is a Throttled provider error.
func IsThrottled(err error) bool { return KindOf(err) == KindThrottled }

// IsConflict reports whether err is a Conflict provider error.
func IsConflict(err error) bool { return KindOf(err) == KindConflict }

// IsPermission reports whether err is a Permission provider error.
func IsPermission(err error) bool { return KindOf(err) == KindPermission }

// RetryAfter returns the cloud's retry hint carried by err, or zero.
func RetryAfter(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}
