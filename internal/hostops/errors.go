// Error kinds of the privileged seam.

package hostops

import (
	"errors"
	"io/fs"
	"syscall"

	"banger/internal/network"
)

// Sentinels for the kinds of failure a privileged op reports. A handler
// wraps one of them (or an error KindOf maps to one); the client returns
// an *Error that errors.Is reports as the same sentinel, in-process and
// through sudo alike.
var (
	// ErrRefused: the arguments name something outside the caller's
	// directories or not banger's; nothing was done.
	ErrRefused = errors.New("refused")
	// ErrInvalid: the request itself is malformed (unknown op, bad JSON,
	// unknown fields). It is a refusal too: errors.Is(err, ErrRefused)
	// holds for it, as it did before the kinds were told apart.
	ErrInvalid error = invalidError{}
	// ErrNotFound: something the op needs does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBusy: the object is in use.
	ErrBusy = errors.New("busy")
)

// The kinds a reply carries.
const (
	KindRefused  = "refused"
	KindInvalid  = "invalid"
	KindNotFound = "not_found"
	KindBusy     = "busy"
	KindInternal = "internal"
)

type invalidError struct{}

func (invalidError) Error() string        { return "invalid" }
func (invalidError) Is(target error) bool { return target == ErrRefused }

// KindOf is the kind of an op's error, the first that matches of: invalid,
// refused (ErrRefused, or an object network says is not banger's),
// not_found (ErrNotFound, ErrNoDebootstrap, a missing file), busy
// (ErrBusy, EBUSY); anything else is internal.
func KindOf(err error) string {
	switch {
	case errors.Is(err, ErrInvalid):
		return KindInvalid
	case errors.Is(err, ErrRefused), errors.Is(err, network.ErrNotBanger):
		return KindRefused
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoDebootstrap), errors.Is(err, fs.ErrNotExist):
		return KindNotFound
	case errors.Is(err, ErrBusy), errors.Is(err, syscall.EBUSY):
		return KindBusy
	}
	return KindInternal
}

// ExitCode is the exit status of `banger internal` for a failure of kind:
// 2 for a refusal or an invalid request (like a usage error), else 1.
func ExitCode(kind string) int {
	if kind == KindRefused || kind == KindInvalid {
		return 2
	}
	return 1
}

func knownKind(k string) string {
	switch k {
	case KindRefused, KindInvalid, KindNotFound, KindBusy:
		return k
	}
	return KindInternal
}

// Error is a failed privileged op as the client returns it. Message is
// the handler's error text, so it reads the same in both modes.
type Error struct {
	Op      string
	Kind    string
	Message string
}

func (e *Error) Error() string { return "privileged op " + e.Op + ": " + e.Message }

// Is matches the sentinel of the error's kind.
func (e *Error) Is(target error) bool {
	switch e.Kind {
	case KindRefused:
		return target == ErrRefused
	case KindInvalid:
		return target == ErrInvalid || target == ErrRefused
	case KindNotFound:
		return target == ErrNotFound
	case KindBusy:
		return target == ErrBusy
	}
	return false
}
