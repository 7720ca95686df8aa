package proxy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultServerVersion is announced until the proxy has seen a backend's
// own greeting (it then announces the backend's version, unless
// Config.ServerVersion is set). It is the MariaDB that computes run here.
const DefaultServerVersion = "5.5.5-10.11.19-MariaDB"

// Config configures the MySQL listener. The zero value of every field means
// its default.
type Config struct {
	// Listen is the address the daemon listens on (default 127.0.0.1:3306).
	// Serve takes a listener, so the proxy itself only reports it.
	Listen string
	// ServerVersion is announced in the greeting. Empty means the version of
	// the backends (learned from the first backend login; DefaultServerVersion
	// before that). A MariaDB 10.x version gets the "5.5.5-" prefix that
	// MariaDB itself sends, so old clients do not mistake it for MySQL 10.
	ServerVersion string
	// TLSCertFile and TLSKeyFile are a PEM certificate and key. When both are
	// empty, a self-signed pair is generated once into DataDir.
	TLSCertFile string
	TLSKeyFile  string
	// DataDir holds the generated self-signed certificate and the RSA key of
	// the caching_sha2_password exchange. Empty means keep them in memory
	// (regenerated at every start).
	DataDir string
	// BindKey, when set, is the key the computes' role accounts are bound
	// with (mariadb.BoundHash): backend logins use the derived stage1. It
	// must be the compute manager's (compute.Manager.SetBindKey).
	BindKey []byte
	// RequireTLS refuses logins that do not upgrade to TLS first.
	RequireTLS bool
	// Domain enables SNI routing: a TLS client that sends the server name
	// "<project>.<Domain>" is routed to that project, and its user name
	// needs no "<project>." prefix.
	Domain string
	// HandshakeTimeout bounds the time from accept to the end of the
	// client's authentication (slow-loris protection). Default 10s.
	HandshakeTimeout time.Duration
	// WakeTimeout bounds waiting for a compute to start. Default 2m.
	WakeTimeout time.Duration
	// BackendTimeout bounds dialing and logging in to a running backend.
	// Default 10s.
	BackendTimeout time.Duration
	// MaxHandshakePacket is the largest client packet accepted before
	// authentication (connection attributes make it grow). Default 64 KiB.
	MaxHandshakePacket int
	// MaxConnections caps client connections, handshaking or established.
	// Default 10000; negative means unlimited.
	MaxConnections int
	// RateLimitBurst is how many failed logins one source address (an IPv4
	// address or an IPv6 /64) may make before it is refused; it regains one
	// every RateLimitInterval. Defaults 10 and 1s; a negative burst disables
	// rate limiting.
	RateLimitBurst    int
	RateLimitInterval time.Duration
	// MaxConnectionsPerSource caps the connections of one source address
	// (the rate limiter's key: an IPv4 address or an IPv6 /64), counted from
	// accept to close, so that one client cannot take every MaxConnections
	// slot. Default 1000; negative means no cap. An application on the
	// daemon's own host, or everything behind one NAT, is one source: raise
	// it for those.
	MaxConnectionsPerSource int
	// MaxConnectionsPerProject is the connection limit of a project that
	// sets none (its config max_connections) and the upper bound of one
	// that does. Negative means no default and no bound. Default 500:
	//   - a wake storm of 500 concurrent logins to one project must succeed
	//     (the daemon's target; its e2e storm sends 200);
	//   - it stays below the default compute's (256Mi) mariadbd
	//     max_connections of 512, leaving normal slots for the daemon's
	//     own admin sessions (role sync, activity checks); smaller computes
	//     (151 connections at least) refuse the excess themselves, 1040;
	//   - mariadbd's one connection past max_connections, kept for
	//     CONNECTION ADMIN, stays the daemon's whatever this is: tenant
	//     roles never hold that privilege;
	//   - one project takes at most 5% of the default MaxConnections.
	// A lower value (say 100, below every compute's 151) protects small
	// computes' admin slots better, at the cost of refusing such storms.
	MaxConnectionsPerProject int
	// AuthDelayThreshold is how many recent failed password checks against
	// one role (from any address) are answered at once. Past it, every
	// answer about the role, right or wrong, waits AuthDelayMax/16,
	// doubling with each further failure up to AuthDelayMax; one failure
	// is forgotten every AuthDelayDecay. Defaults 5, 2s (at most half of
	// HandshakeTimeout) and 10s; a negative threshold turns the delay off.
	// AuthDelayMax must be below HandshakeTimeout, or delayed logins would
	// time out.
	AuthDelayThreshold int
	AuthDelayMax       time.Duration
	AuthDelayDecay     time.Duration
	// PinnedIdleTimeout ends a session that stays idle this long while
	// pinned (an open transaction, locks) when its project sets none;
	// default 15m, negative: never.
	PinnedIdleTimeout time.Duration
	// OnReattach observes each re-attach's latency (metrics); optional.
	OnReattach ReattachObserver
	// OnPoolWait observes each wait for a pooled backend connection
	// (metrics), and OnPoolGone a compute's pool dropped once it
	// stopped; both optional.
	OnPoolWait func(computeID string, d time.Duration)
	OnPoolGone func(computeID string)
	// Relay is how sessions are relayed between the commands the daemon
	// handles itself: RelayEventLoop (the default on Linux) or
	// RelayGoroutines. TLS sessions always use goroutines.
	Relay string
}

// The relays of Config.Relay.
const (
	RelayEventLoop  = "event-loop"
	RelayGoroutines = "goroutines"
)

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:3306"
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.WakeTimeout == 0 {
		c.WakeTimeout = 2 * time.Minute
	}
	if c.BackendTimeout == 0 {
		c.BackendTimeout = 10 * time.Second
	}
	if c.MaxHandshakePacket == 0 {
		c.MaxHandshakePacket = 64 << 10
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 10000
	}
	if c.RateLimitBurst == 0 {
		c.RateLimitBurst = 10
	}
	if c.RateLimitInterval == 0 {
		c.RateLimitInterval = time.Second
	}
	if c.Relay == "" {
		c.Relay = RelayEventLoop
	}
	if c.PinnedIdleTimeout == 0 {
		c.PinnedIdleTimeout = 15 * time.Minute
	}
	c.setLimitDefaults()
}

func (c *Config) setLimitDefaults() {
	if c.MaxConnectionsPerSource == 0 {
		c.MaxConnectionsPerSource = 1000
	}
	if c.MaxConnectionsPerProject == 0 {
		c.MaxConnectionsPerProject = 500
	}
	if c.AuthDelayThreshold == 0 {
		c.AuthDelayThreshold = 5
	}
	if c.AuthDelayMax == 0 {
		// Delayed logins must still finish their handshake in time.
		c.AuthDelayMax = min(2*time.Second, c.HandshakeTimeout/2)
	}
	if c.AuthDelayDecay == 0 {
		c.AuthDelayDecay = 10 * time.Second
	}
}

// Validate reports the first invalid setting. It applies defaults first, as
// New does, so a zero Config is valid.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("proxy: tls_cert and tls_key must be set together"))
	}
	if c.Relay != RelayEventLoop && c.Relay != RelayGoroutines {
		errs = append(errs, fmt.Errorf("proxy: relay must be %q or %q (got %q)", RelayEventLoop, RelayGoroutines, c.Relay))
	}
	for name, d := range map[string]time.Duration{
		"handshake_timeout": c.HandshakeTimeout, "wake_timeout": c.WakeTimeout,
		"backend_timeout": c.BackendTimeout, "rate_limit_interval": c.RateLimitInterval,
		"auth_delay_max": c.AuthDelayMax, "auth_delay_decay": c.AuthDelayDecay,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("proxy: %s must not be negative (got %s)", name, d))
		}
	}
	if c.MaxHandshakePacket < 1024 || c.MaxHandshakePacket > 1<<24-1 {
		errs = append(errs, fmt.Errorf("proxy: max_handshake_packet must be between 1024 and 16777215 (got %d)", c.MaxHandshakePacket))
	}
	if strings.HasPrefix(c.Domain, ".") || strings.HasSuffix(c.Domain, ".") {
		errs = append(errs, fmt.Errorf("proxy: domain %q must not start or end with a dot", c.Domain))
	}
	if c.AuthDelayThreshold >= 0 && c.AuthDelayMax >= c.HandshakeTimeout {
		errs = append(errs, fmt.Errorf("proxy: auth_delay_max (%s) must be below handshake_timeout (%s)", c.AuthDelayMax, c.HandshakeTimeout))
	}
	if strings.ContainsRune(c.ServerVersion, 0) {
		errs = append(errs, errors.New("proxy: server_version must not contain NUL"))
	}
	return errors.Join(errs...)
}

// normalizeVersion adds the "5.5.5-" prefix to a MariaDB 10.x version, the
// convention MariaDB before 11.0 follows so that clients comparing versions
// numerically do not treat it as a MySQL 10.
func normalizeVersion(v string) string {
	if strings.HasPrefix(v, "10.") {
		return "5.5.5-" + v
	}
	return v
}
