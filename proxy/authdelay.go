package proxy

import (
	"context"
	"math"
	"sync"
	"time"
)

// roleDelays slows down the checks of one role that keeps failing, from
// any number of source addresses, which the per-source limiter cannot see
// together (MariaDB's max_password_errors and MaxScale's
// max_auth_errors_until_block count per account for the same reason, but
// block it; this only delays). Each role has a failure score that leaks one
// unit per decay interval. Past the threshold every answer about the role
// waits max/16, doubling per further failure up to max. The right password
// waits too, so that an early answer cannot tell a right guess from a
// wrong one; it still logs in, so nobody is locked out.
type roleDelays struct {
	threshold float64
	max       time.Duration
	decay     time.Duration

	mu        sync.Mutex
	scores    map[string]*roleScore
	lastSweep time.Time
}

type roleScore struct {
	failures float64
	at       time.Time
}

const (
	// delaySteps is how many failures past the threshold reach the
	// maximum delay (max/16, /8, /4, /2, max). The score stops there, so
	// the delay starts shrinking one decay interval after an attack stops.
	delaySteps = 5
	// maxTrackedRoles bounds the memory a spray of made-up role names can
	// take; past it an arbitrary score is dropped.
	maxTrackedRoles = 100_000
)

func newRoleDelays(threshold int, max, decay time.Duration) *roleDelays {
	if threshold < 0 {
		return nil // disabled
	}
	return &roleDelays{threshold: float64(threshold), max: max, decay: decay, scores: map[string]*roleScore{}}
}

// observe records the outcome of one check of key and returns how long its
// answer must wait: the delay earned by the failures before it.
func (r *roleDelays) observe(key string, ok bool, now time.Time) time.Duration {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.scores[key]
	var score float64
	if s != nil {
		score = r.leak(s, now)
	}
	d := r.delayFor(score)
	if !ok {
		if s == nil {
			s = r.add(key, now)
		}
		s.failures = min(score+1, r.threshold+delaySteps)
	}
	return d
}

// leak brings s up to date and reports its score. now may be a little
// older than s.at (the clock is read before the lock): time never runs
// backwards here, or the score would grow.
func (r *roleDelays) leak(s *roleScore, now time.Time) float64 {
	if r.decay > 0 && now.After(s.at) {
		s.failures = max(s.failures-float64(now.Sub(s.at))/float64(r.decay), 0)
		s.at = now
	}
	return s.failures
}

func (r *roleDelays) delayFor(score float64) time.Duration {
	n := int(math.Ceil(score - r.threshold)) // failures past the threshold, a partly leaked one included
	switch {
	case n <= 0:
		return 0
	case n >= delaySteps:
		return r.max
	default:
		return r.max >> (delaySteps - n)
	}
}

// add makes room for and inserts a new score.
func (r *roleDelays) add(key string, now time.Time) *roleScore {
	r.sweep(now)
	for k := range r.scores {
		if len(r.scores) < maxTrackedRoles {
			break
		}
		delete(r.scores, k)
	}
	s := &roleScore{at: now}
	r.scores[key] = s
	return s
}

// sweep forgets, once per decay interval (at least a minute), the scores
// that leaked to zero.
func (r *roleDelays) sweep(now time.Time) {
	if now.Sub(r.lastSweep) < max(r.decay, time.Minute) {
		return
	}
	r.lastSweep = now
	for k, s := range r.scores {
		if r.leak(s, now) == 0 {
			delete(r.scores, k)
		}
	}
}

// sleep waits d, or less if ctx ends first.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
