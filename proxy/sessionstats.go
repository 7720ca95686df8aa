package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// sessionStat names one count of session events.
type sessionStat int

const (
	statDetached       sessionStat = iota // detached before a planned stop
	statReattachWarm                      // attached again to a running compute
	statReattachCold                      // attached again, starting the compute
	statPinTimeout                        // pinned sessions closed after the pinned idle timeout
	statLostState                         // pinned sessions ended because their compute was lost
	statLostMidCommand                    // backend connections lost during a command
	statReprepared                        // statements prepared again after a re-attach
	statPoolReset                         // pooled backend connections reset for another session
	statPoolMatched                       // pooled backend connections taken over without a reset
	numSessionStats
)

var sessionStatNames = [numSessionStats]string{
	"detached", "reattach_warm", "reattach_cold", "pin_timeout", "lost_state", "lost_mid_command", "reprepared", "pool_reset", "pool_matched",
}

// ReattachObserver receives each re-attach's latency (the metrics
// histogram); nil is allowed.
type ReattachObserver func(cold bool, d time.Duration)

// sessionStats are the proxy's session counters and gauges.
type sessionStats struct {
	counts   [numSessionStats]atomic.Int64
	attached atomic.Int64
	observe  ReattachObserver

	mu       sync.Mutex
	failures map[string]int64 // re-attach failures by reason
	pinned   map[string]int64 // pinned sessions by kind
}

func (st *sessionStats) inc(k sessionStat) { st.counts[k].Add(1) }

func (st *sessionStats) attach(delta int64) { st.attached.Add(delta) }

func (st *sessionStats) reattached(cold bool, d time.Duration) {
	if cold {
		st.inc(statReattachCold)
	} else {
		st.inc(statReattachWarm)
	}
	if st.observe != nil {
		st.observe(cold, d)
	}
}

func (st *sessionStats) reattachFailed(reason string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failures == nil {
		st.failures = map[string]int64{}
	}
	st.failures[reason]++
}

// setPinned moves one session from the pin reason from to to ("": none).
func (st *sessionStats) setPinned(from, to string) {
	if from == to {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pinned == nil {
		st.pinned = map[string]int64{}
	}
	if from != "" {
		st.pinned[pinKind(from)]--
	}
	if to != "" {
		st.pinned[pinKind(to)]++
	}
}

// SessionStats is a snapshot of the proxy's client sessions.
type SessionStats struct {
	Attached, Detached int64            // open sessions with and without a backend connection
	Events             map[string]int64 // counts by event (detached, reattach_warm, ...)
	ReattachFailures   map[string]int64 // by reason
	Pinned             map[string]int64 // open pinned sessions by reason
}

// SessionStats returns the current session figures.
func (s *Server) SessionStats() SessionStats {
	st := &s.stats
	out := SessionStats{Attached: st.attached.Load(), Events: map[string]int64{},
		ReattachFailures: map[string]int64{}, Pinned: map[string]int64{}}
	for k := range numSessionStats {
		out.Events[sessionStatNames[k]] = st.counts[k].Load()
	}
	s.mu.Lock()
	out.Detached = max(int64(len(s.sessions))-out.Attached, 0)
	s.mu.Unlock()
	st.mu.Lock()
	for k, v := range st.failures {
		out.ReattachFailures[k] = v
	}
	for k, v := range st.pinned {
		out.Pinned[k] = v
	}
	st.mu.Unlock()
	return out
}
