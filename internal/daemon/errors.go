package daemon

import (
	"context"
	"errors"
	"fmt"

	"banger/internal/api"
	"banger/internal/store"
)

// Sentinel errors the daemon's operations wrap; toRPCError maps them.
var (
	ErrInvalid     = errors.New("invalid")
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrBusy        = errors.New("busy")
	ErrUnavailable = errors.New("unavailable")
)

// invalidf returns an error of kind invalid.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// kindError carries a kind with a message that does not repeat the sentinel.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func withKind(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// toRPCError is the one place Go errors become wire errors.
func toRPCError(err error) *api.Error {
	var rpcErr *api.Error
	if errors.As(err, &rpcErr) {
		return rpcErr
	}
	kind := api.KindInternal
	switch {
	case errors.Is(err, ErrInvalid):
		kind = api.KindInvalid
	case errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		kind = api.KindNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, store.ErrConflict):
		kind = api.KindConflict
	case errors.Is(err, ErrBusy):
		kind = api.KindBusy
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		kind = api.KindUnavailable
	}
	msg := err.Error()
	var ke *kindError
	if !errors.As(err, &ke) {
		msg = stripKindPrefix(msg)
	}
	return &api.Error{Code: api.CodeApplication, Message: msg, Data: api.ErrorData{Kind: kind}}
}

// stripKindPrefix removes a leading "invalid: " style prefix that invalidf adds.
func stripKindPrefix(msg string) string {
	for _, p := range []string{"invalid: ", "not found: ", "conflict: ", "busy: ", "unavailable: "} {
		if len(msg) > len(p) && msg[:len(p)] == p {
			return msg[len(p):]
		}
	}
	return msg
}
