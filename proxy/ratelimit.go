package proxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// failLimiter slows password guessing: each source address has a bucket of
// RateLimitBurst tokens that refills one per interval. Every password check
// (login, caching_sha2_password full authentication, COM_CHANGE_USER) takes
// a token at the moment it runs; a successful check gives it back, a failed
// one keeps it spent. So a source gets at most burst failed checks however
// many connections it opened beforehand, and a pool of successful logins
// never drains its own bucket. An address whose bucket is empty is also
// refused at accept, before any handshake work.
type failLimiter struct {
	burst    float64
	interval time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

// bucket counts tokens including those held by checks in flight, which
// may yet give them back.
type bucket struct {
	tokens   float64
	at       time.Time
	inflight int
	settled  chan struct{} // closed when a check in flight settles; nil when nobody waits
}

func newFailLimiter(burst int, interval time.Duration) *failLimiter {
	if burst < 0 {
		return nil // disabled
	}
	return &failLimiter{burst: float64(burst), interval: interval, buckets: map[string]*bucket{}}
}

// refill brings b up to date and reports its tokens. Callers read the
// clock before taking the lock, so now may be a little older than b.at:
// time never runs backwards here, or a bucket would lose part of a token.
func (l *failLimiter) refill(b *bucket, now time.Time) float64 {
	switch {
	case l.interval <= 0:
		b.tokens = l.burst
	case now.After(b.at):
		b.tokens = min(b.tokens+float64(now.Sub(b.at))/float64(l.interval), l.burst)
		b.at = now
	}
	return b.tokens
}

// allowed reports whether key has a token left, counting those of checks
// in flight: the cheap refusal at accept.
func (l *failLimiter) allowed(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return true
	}
	return l.refill(b, now) >= 1
}

// take reserves a token for one password check of key; settle must follow
// when it reports true. While every token left is held by checks in flight
// it waits for one of them to settle (microseconds: a success gives its
// token back), so concurrent good logins are never refused for each
// other, and the number of checks stays bounded by the tokens.
func (l *failLimiter) take(ctx context.Context, key string) bool {
	if l == nil {
		return true
	}
	for {
		ok, wait := l.tryTake(key, time.Now())
		if ok || wait == nil {
			return ok
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
	}
}

// tryTake takes a free token, or returns a channel closed when a check in
// flight settles, or neither when the bucket is spent by failures.
func (l *failLimiter) tryTake(key string, now time.Time) (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	switch free := l.refill(b, now) - float64(b.inflight); {
	case free >= 1:
		b.inflight++
		return true, nil
	case b.inflight == 0:
		return false, nil
	}
	if b.settled == nil {
		b.settled = make(chan struct{})
	}
	return false, b.settled
}

// settle ends a check started by take: a failure keeps its token spent.
func (l *failLimiter) settle(key string, ok bool, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key] // never swept while a check is in flight
	if b == nil {
		return
	}
	l.refill(b, now)
	b.inflight--
	if !ok {
		b.tokens = max(b.tokens-1, 0)
	}
	if b.settled != nil {
		close(b.settled)
		b.settled = nil
	}
}

// sweep forgets full, idle buckets once a minute so the map only holds
// addresses that failed recently or have checks in flight.
func (l *failLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if l.refill(b, now) >= l.burst && b.inflight == 0 {
			delete(l.buckets, k)
		}
	}
}

// limiterKey is the source address the limiter counts: the IP for IPv4, the
// /64 for IPv6 (one host usually owns a whole /64).
func limiterKey(addr net.Addr) string {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(addr.String())
		if err != nil {
			return addr.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
