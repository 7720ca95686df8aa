package kubetest

import (
	"errors"
	"fmt"
	"time"
)

// abortError is an error of a WaitFor condition that ends the wait.
type abortError struct{ err error }

func (a abortError) Error() string { return a.err.Error() }
func (a abortError) Unwrap() error { return a.err }

// Abort marks err, returned by a WaitFor condition, as final: WaitFor
// returns it at once. It is for a state that waiting cannot change, such
// as the awaited process having exited.
func Abort(err error) error { return abortError{err} }

// WaitFor polls cond every interval until it returns true, an error made
// by Abort, or limit passes. Other errors say why it is not true yet: the
// last one is in the error WaitFor returns.
func WaitFor(limit, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return nil
		}
		if a, isAbort := errors.AsType[abortError](err); isAbort {
			return fmt.Errorf("%s: %w", what, a.err)
		}
		last = err
		time.Sleep(interval)
	}
	if last != nil {
		return fmt.Errorf("%s: not after %s: %w", what, limit, last)
	}
	return fmt.Errorf("%s: not after %s", what, limit)
}

// Closed reports whether ch is closed: the way a goroutine that waits for
// a process says it has exited.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
