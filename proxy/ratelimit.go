package proxy

import (
	"net"
	"sync"
	"time"
)

// failLimiter slows password guessing: each source address has a bucket of
// RateLimitBurst failures that refills one per interval. An address with an
// empty bucket is refused before any authentication work (and so before any
// wake). Successful logins cost nothing.
type failLimiter struct {
	burst    float64
	interval time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newFailLimiter(burst int, interval time.Duration) *failLimiter {
	if burst < 0 {
		return nil // disabled
	}
	return &failLimiter{burst: float64(burst), interval: interval, buckets: map[string]*bucket{}}
}

// refill brings b up to date and reports its tokens.
func (l *failLimiter) refill(b *bucket, now time.Time) float64 {
	if l.interval > 0 {
		b.tokens += float64(now.Sub(b.at)) / float64(l.interval)
	} else {
		b.tokens = l.burst
	}
	b.tokens = min(b.tokens, l.burst)
	b.at = now
	return b.tokens
}

// allowed reports whether key may attempt a login now.
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

// failed records a failed login from key.
func (l *failLimiter) failed(key string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	b.tokens = max(b.tokens-1, 0)
}

// sweep forgets full buckets once a minute so the map only holds addresses
// that failed recently.
func (l *failLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if l.refill(b, now) >= l.burst {
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
