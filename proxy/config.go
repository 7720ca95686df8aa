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
	// Relay is how established plain sessions move bytes: RelayEventLoop
	// (the default) or RelayGoroutines. TLS sessions always use goroutines.
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
}

// Validate reports the first invalid setting. It applies defaults first, as
// New does, so a zero Config is valid.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("proxy: tls_cert and tls_key must be set together"))
	}
	for name, d := range map[string]time.Duration{
		"handshake_timeout": c.HandshakeTimeout, "wake_timeout": c.WakeTimeout,
		"backend_timeout": c.BackendTimeout, "rate_limit_interval": c.RateLimitInterval,
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
	if c.Relay != RelayEventLoop && c.Relay != RelayGoroutines {
		errs = append(errs, fmt.Errorf("proxy: relay must be %q or %q (got %q)", RelayEventLoop, RelayGoroutines, c.Relay))
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
