package proxy

import "sync/atomic"

// Counter names one kind of outcome. Every refusal increments exactly one.
type Counter int

// The counters, by outcome.
const (
	CountAccepted           Counter = iota // connections accepted
	CountLogins                            // logins relayed to a backend successfully
	CountAuthFailed                        // wrong password, unknown user or unknown project
	CountRateLimited                       // refused: too many failures from the address
	CountTooManyConns                      // refused: MaxConnections reached
	CountHandshakeTimeout                  // HandshakeTimeout expired
	CountHandshakeAborted                  // client closed during the handshake
	CountMalformed                         // unparseable handshake packet
	CountPacketTooLarge                    // handshake packet over MaxHandshakePacket
	CountTLSRequired                       // plain login refused by RequireTLS
	CountTLSFailed                         // TLS handshake failed
	CountWakeFailed                        // the compute could not be woken
	CountBackendFailed                     // dial or protocol failure with the backend
	CountBackendRefused                    // the backend answered the login with ERR
	CountCapabilityMismatch                // backend lacks a capability the client negotiated
	CountKillRewritten                     // KILL mapped from our id to a backend thread id
	CountChangeUser                        // COM_CHANGE_USER rewritten
	CountChangeUserRefused                 // COM_CHANGE_USER refused
	CountPasswordChecks                    // password checks performed (login or COM_CHANGE_USER), right or wrong
	CountAuthDelayed                       // answers delayed because their role failed repeatedly
	CountTooManyFromSource                 // refused: MaxConnectionsPerSource reached
	CountTooManyForProject                 // refused: the project's connection limit reached
	CountSpaceFreed                        // DROP or TRUNCATE on a read-only compute, passed to the daemon to lift it
	CountPoolTimeout                       // no pooled backend connection became free within pool_wait_timeout
	numCounters
)

var counterNames = [numCounters]string{
	"accepted", "logins", "auth_failed", "rate_limited", "too_many_connections",
	"handshake_timeout", "handshake_aborted", "malformed_handshake", "packet_too_large",
	"tls_required", "tls_failed", "wake_failed", "backend_failed", "backend_refused",
	"capability_mismatch", "kill_rewritten", "change_user", "change_user_refused",
	"password_checks", "auth_delayed", "too_many_connections_source", "too_many_connections_project",
	"space_freed", "pool_timeout",
}

func (c Counter) String() string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return counterNames[c]
}

type counters [numCounters]atomic.Int64

func (c *counters) inc(k Counter) { c[k].Add(1) }

// Count returns one counter's value.
func (s *Server) Count(k Counter) int64 {
	if k < 0 || k >= numCounters {
		return 0
	}
	return s.counters[k].Load()
}

// Counters returns every counter by name.
func (s *Server) Counters() map[string]int64 {
	m := make(map[string]int64, numCounters)
	for k := range numCounters {
		m[k.String()] = s.counters[k].Load()
	}
	return m
}
