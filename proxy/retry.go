package proxy

import (
	"errors"
	"time"

	"github.com/serverlessd/serverlessd/compute"
)

// backendAttempts bounds how often a login retries a backend it could not
// reach. A compute that is being suspended right as the login arrives
// disappears between Wake and the dial; the next Wake waits for the
// suspend to finish and resumes it, so the client never sees the race.
const backendAttempts = 3

// connect wakes the compute and logs in to its backend, retrying when the
// backend was unreachable.
func (ss *session) connect() (compute.WakeResult, *link, []byte, error) {
	for attempt := 1; ; attempt++ {
		res, err := ss.wake()
		if err != nil {
			return res, nil, nil, err
		}
		if !ss.pooled() {
			// The pool bounds a pooled session's backend connections;
			// any other takes one of the compute's own.
			if err := ss.admitCompute(res); err != nil {
				return res, nil, nil, err
			}
		}
		l, ok, _, err := ss.login(res)
		var r *refusal
		if err == nil || attempt == backendAttempts || !errors.As(err, &r) || r.kind != CountBackendFailed || ss.isClosed() {
			return res, l, ok, err
		}
		ss.log.Info("backend unreachable; waking again", "project", ss.project, "compute", res.ComputeID,
			"attempt", attempt, "err", err)
		time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
	}
}

// isClosed reports whether the session was closed (Shutdown).
func (ss *session) isClosed() bool {
	ss.cmu.Lock()
	defer ss.cmu.Unlock()
	return ss.closed
}
