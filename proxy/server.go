// Package proxy is serverlessd's MySQL listener. It greets clients itself,
// authenticates them against the stored role hash BEFORE waking anything,
// wakes the project's compute, logs in to it as the same user with the
// recovered SHA1(password), and then relays bytes both ways.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// Directory finds a login's project and its stored role hash.
type Directory interface {
	// LookupRole resolves project (a name or an id) and user. hash is
	// MariaDB's native form "*<40 HEX>" = SHA1(SHA1(pw)). Any error means
	// access denied; implementations should take about as long for unknown
	// projects and users as for known ones.
	LookupRole(ctx context.Context, project, user string) (projectID, hash string, err error)
}

// Waker starts computes and exposes their activity counters.
type Waker interface {
	// Wake returns the backend address ("unix:/path/to/sock" or
	// "host:port") of the project's running compute, starting it if
	// suspended.
	Wake(ctx context.Context, projectID string) (compute.WakeResult, error)
	// Activity returns the live activity counters for a compute.
	Activity(computeID string) *compute.Activity
}

// Warmer is a Waker that can answer for a running compute without a
// context: the proxy then bounds only the wakes that may wait.
type Warmer interface {
	Warm(projectID string) (compute.WakeResult, bool)
}

// Recoverer is a Waker that can recover a compute whose address did not
// answer: it returns where to connect now.
type Recoverer interface {
	Unreachable(ctx context.Context, res compute.WakeResult, cause error) (compute.WakeResult, error)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// connIDBase is the first connection id the proxy hands out. Backend thread
// ids count up from 1, so ours never collide with them in practice, and a
// KILL of an id below the base can be passed to the backend unchanged.
const connIDBase = 1_000_000_000

// Server is the MySQL listener.
type Server struct {
	cfg     Config
	dir     Directory
	waker   Waker
	log     *slog.Logger
	tlsConf *tls.Config
	rsaKey  *rsa.PrivateKey
	rsaPub  []byte
	limiter *failLimiter
	delays  *roleDelays
	// Open connections by source address (from accept) and by project
	// (from authentication), for their caps.
	sources  connCounts
	projects connCounts
	// dummyStage2 stands in for the hash of an unknown project or user, so
	// they cost the same work as a wrong password.
	dummyStage2 []byte

	profile  atomic.Pointer[backendProfile]
	nextID   atomic.Uint32
	active   atomic.Int64
	counters counters

	baseCtx context.Context
	cancel  context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[uint32]*session
	wg        sync.WaitGroup

	stats sessionStats
	pools pools // backend connections of pooled sessions, by compute
	// rowCountGrace is rowCountGrace, but in tests that need it longer
	// than any pause of a loaded machine.
	rowCountGrace atomic.Int64 // nanoseconds
	loops         *loopGroup   // nil: every session uses the goroutine engine
}

// New checks cfg, loads or generates the TLS certificate and RSA key, and
// returns a Server ready to Serve.
func New(cfg Config, dir Directory, waker Waker, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if dir == nil || waker == nil {
		return nil, errors.New("proxy: a Directory and a Waker are required")
	}
	if logger == nil {
		logger = slog.Default()
	}
	tlsConf, err := loadTLS(&cfg)
	if err != nil {
		return nil, err
	}
	key, err := loadSha2Key(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	pub, err := publicKeyPEM(key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, dir: dir, waker: waker, log: logger.With("component", "proxy"),
		tlsConf: tlsConf, rsaKey: key, rsaPub: pub,
		limiter:     newFailLimiter(cfg.RateLimitBurst, cfg.RateLimitInterval),
		delays:      newRoleDelays(cfg.AuthDelayThreshold, cfg.AuthDelayMax, cfg.AuthDelayDecay),
		dummyStage2: randomBytes(20),
		baseCtx:     ctx, cancel: cancel,
		listeners: map[net.Listener]struct{}{},
		sessions:  map[uint32]*session{},
	}
	s.stats.observe = cfg.OnReattach
	if cfg.Relay != RelayGoroutines {
		if s.loops, err = newLoopGroup(); err != nil {
			logger.Warn("relay event loops unavailable; relaying with goroutines", "component", "proxy", "err", err)
			s.loops = nil
		}
	}
	s.pools.loops = s.loops
	s.nextID.Store(connIDBase)
	s.profile.Store(defaultProfile(cfg.ServerVersion))
	s.rowCountGrace.Store(int64(rowCountGrace))
	return s, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// Serve accepts connections on ln, one goroutine per session, until ln is
// closed. After Shutdown it returns ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(ln, true) {
		return ErrServerClosed
	}
	defer s.trackListener(ln, false)
	s.log.Info("listening", "addr", ln.Addr().String())
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and friends: wait instead of spinning, like net/http.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.counters.inc(CountAccepted)
		s.wg.Add(1)
		go s.handle(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) trackListener(ln net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting, then waits for the sessions to end by
// themselves until ctx is done, when it closes the rest and cancels pending
// wakes. It returns ctx's error if it had to force sessions closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		s.closeLoops()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	n := len(s.sessions)
	for _, ss := range s.sessions {
		ss.close()
	}
	s.mu.Unlock()
	s.log.Info("closing sessions at shutdown", "sessions", n)
	<-done
	s.closeLoops()
	return ctx.Err()
}

// closeLoops stops the event loops once no session is left in them, and
// closes the pooled backend connections no session holds any more.
func (s *Server) closeLoops() {
	if s.loops != nil {
		s.loops.Close()
	}
	for _, p := range s.pools.all() {
		p.closeIdle(time.Time{})
	}
}

// ActiveConnections is the number of client connections open now.
func (s *Server) ActiveConnections() int64 { return s.active.Load() }

// register adds ss to the session table, used by KILL and Shutdown.
func (s *Server) register(ss *session) {
	s.mu.Lock()
	s.sessions[ss.id] = ss
	s.mu.Unlock()
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.id)
	s.mu.Unlock()
}

// allocID returns a fresh connection id, skipping zero and ids below the
// base when the counter wraps.
func (s *Server) allocID() uint32 {
	for {
		id := s.nextID.Add(1)
		if id >= connIDBase {
			return id
		}
		s.nextID.CompareAndSwap(id, connIDBase)
	}
}

// backendProfile is what the greeting announces: the backends' version,
// default charset and capabilities.
type backendProfile struct {
	version string
	charset byte
	caps    uint32
	extCaps uint32
}

// mariadb1011Caps is MariaDB 10.11's greeting capabilities (without SSL,
// which the proxy adds itself), used until a backend has been seen.
const (
	mariadb1011Caps    uint32 = 0x81fff7fe
	mariadb1011ExtCaps uint32 = wire.MariaDBProgress | wire.MariaDBStmtBulkOperations |
		wire.MariaDBExtendedMetadata | wire.MariaDBCacheMetadata
	// utf8mb4_general_ci: what clients get when they do not pick a collation.
	defaultCharset byte = 45
)

func defaultProfile(version string) *backendProfile {
	p := &backendProfile{version: DefaultServerVersion, charset: defaultCharset,
		caps: mariadb1011Caps, extCaps: mariadb1011ExtCaps}
	if version != "" {
		p.version = normalizeVersion(version) // never overridden by learn
	}
	return p
}

// learn records a backend's greeting so later greetings announce the real
// version, charset and capabilities. A configured ServerVersion wins.
func (s *Server) learn(g *wire.Greeting) {
	old := s.profile.Load()
	p := &backendProfile{version: g.ServerVersion, charset: g.Charset,
		caps: g.Caps &^ mysql.CLIENT_SSL, extCaps: g.ExtCaps}
	if s.cfg.ServerVersion != "" {
		p.version = old.version
	}
	if *p == *old {
		return
	}
	if s.profile.CompareAndSwap(old, p) {
		s.log.Info("learned backend profile", "version", p.version,
			"caps", wire.CapNames(advertisedCaps(p.caps)), "ext_caps", wire.ExtCapNames(p.extCaps&carryableExtCaps))
	}
}
