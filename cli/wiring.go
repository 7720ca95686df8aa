package cli

import (
	"context"
	"path/filepath"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/config"
	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/proxy"
	"github.com/serverlessd/serverlessd/store"
)

// proxyConfig maps the daemon's config onto the proxy's.
func proxyConfig(cfg config.Config, version string) proxy.Config {
	p := cfg.Proxy
	serverVersion := p.ServerVersion
	if serverVersion == "" {
		serverVersion = version
	}
	return proxy.Config{
		Listen: p.Listen, ServerVersion: serverVersion, TLSCertFile: p.TLSCert, TLSKeyFile: p.TLSKey,
		DataDir: filepath.Join(cfg.DataDir, "tls"), RequireTLS: p.RequireTLS, Domain: p.Domain,
		HandshakeTimeout: p.HandshakeTimeout, WakeTimeout: p.WakeTimeout,
		MaxHandshakePacket: p.MaxHandshakePacket, MaxConnections: p.MaxConnections,
		RateLimitBurst: p.RateLimitBurst, RateLimitInterval: p.RateLimitInterval, Relay: p.Relay,
		MaxConnectionsPerSource: p.MaxConnectionsPerSource, MaxConnectionsPerProject: p.MaxConnectionsPerProject,
		AuthDelayThreshold: p.AuthDelayThreshold, AuthDelayMax: p.AuthDelayMax, AuthDelayDecay: p.AuthDelayDecay,
		PinnedIdleTimeout: pinnedTimeout(p.PinnedIdleTimeout),
	}
}

// pinnedTimeout maps the config's 0 (never) to the proxy's negative.
func pinnedTimeout(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// scrapeStoreTimeout bounds each store call a scrape makes: a store that
// does not answer must show as down, not hold the scrape past Prometheus'
// own timeout, which would drop every series with it.
const scrapeStoreTimeout = 2 * time.Second

// registerMetrics adds the gauges and counters read at scrape time: the
// store's health, the computes by state, and the proxy's connection,
// failure and byte counts.
func registerMetrics(m *metrics.Metrics, st store.Store, mgr *compute.Manager, px *proxy.Server) {
	m.Register(
		metrics.NewFunc("store_up", "1 if the state store answered a ping at scrape time, else 0.", false, nil, func() []metrics.Sample {
			return []metrics.Sample{{Value: storeUp(st)}}
		}),
		metrics.NewFunc("computes", "Computes by lifecycle state.", false, []string{"state"}, func() []metrics.Sample {
			return computesByState(st)
		}),
		metrics.NewFunc("proxy_connections_active", "Client connections open through the proxy.", false, nil, func() []metrics.Sample {
			return []metrics.Sample{{Value: float64(px.ActiveConnections())}}
		}),
		metrics.NewFunc("proxy_connections_total", "Client connections accepted by the proxy.", true, nil, func() []metrics.Sample {
			return []metrics.Sample{{Value: float64(px.Count(proxy.CountAccepted))}}
		}),
		metrics.NewFunc("auth_failures_total", "Logins refused: wrong password, unknown user or unknown project.", true, nil, func() []metrics.Sample {
			return []metrics.Sample{{Value: float64(px.Count(proxy.CountAuthFailed))}}
		}),
		metrics.NewFunc("proxy_events_total", "Proxy outcomes by kind (refusals, failures, rewrites).", true, []string{"kind"}, func() []metrics.Sample {
			var out []metrics.Sample
			for k, v := range px.Counters() {
				out = append(out, metrics.Sample{Labels: []string{k}, Value: float64(v)})
			}
			return out
		}),
		metrics.NewFunc("proxy_sessions", "Client sessions open, attached to a backend connection or detached (their compute suspended).", false, []string{"state"}, func() []metrics.Sample {
			st := px.SessionStats()
			return []metrics.Sample{{Labels: []string{"attached"}, Value: float64(st.Attached)}, {Labels: []string{"detached"}, Value: float64(st.Detached)}}
		}),
		metrics.NewFunc("proxy_sessions_pinned", "Client sessions holding state that cannot move to another connection, by what they hold.", false, []string{"reason"}, func() []metrics.Sample {
			return samples(px.SessionStats().Pinned)
		}),
		metrics.NewFunc("proxy_session_events_total", "Client session events: detached for a suspend, re-attached warm or cold, closed at the pinned idle timeout, ended by a lost compute, statements prepared again, pooled connections reset for another session or taken over as they were.", true, []string{"event"}, func() []metrics.Sample {
			return samples(px.SessionStats().Events)
		}),
		metrics.NewFunc("proxy_reattach_failures_total", "Re-attaches that failed, by reason (wake, backend, login_refused, restore).", true, []string{"reason"}, func() []metrics.Sample {
			return samples(px.SessionStats().ReattachFailures)
		}),
		metrics.NewFunc("proxy_pool_connections", "Pooled backend connections by compute and state: size (the pool's bound), in_use, parked (with an idle session, free to take), idle (no session).", false, []string{"compute", "state"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, p := range px.PoolStats() {
				for state, v := range map[string]int{"size": p.Size, "in_use": p.Open - p.Idle - p.Parked, "parked": p.Parked, "idle": p.Idle} {
					out = append(out, metrics.Sample{Labels: []string{p.ComputeID, state}, Value: float64(v)})
				}
			}
			return out
		}),
		metrics.NewFunc("proxy_pool_waiters", "Pooled client sessions waiting for a backend connection, by compute.", false, []string{"compute"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, p := range px.PoolStats() {
				out = append(out, metrics.Sample{Labels: []string{p.ComputeID}, Value: float64(p.Waiting)})
			}
			return out
		}),
		metrics.NewFunc("proxy_pool_events_total", "Pool events by compute: waits (a session found the pool busy), timeouts (it waited pool_wait_timeout in vain), reclaims (a connection taken from an idle session).", true, []string{"compute", "event"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, p := range px.PoolStats() {
				for ev, v := range map[string]int64{"wait": p.Waits, "timeout": p.Timeouts, "reclaim": p.Reclaims} {
					out = append(out, metrics.Sample{Labels: []string{p.ComputeID, ev}, Value: float64(v)})
				}
			}
			return out
		}),
		metrics.NewFunc("proxy_bytes_total", "Bytes through the proxy: in is client to database, out is database to client.", true, []string{"direction"}, func() []metrics.Sample {
			in, out := mgr.TotalBytes()
			return []metrics.Sample{{Labels: []string{"in"}, Value: float64(in)}, {Labels: []string{"out"}, Value: float64(out)}}
		}),
	)
}

// storeUp pings the store as /readyz does: 1 if it answers, else 0.
func storeUp(st store.Store) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeStoreTimeout)
	defer cancel()
	if st.Ping(ctx) != nil {
		return 0
	}
	return 1
}

// samples turns a count by label into metric samples.
func samples(m map[string]int64) []metrics.Sample {
	out := make([]metrics.Sample, 0, len(m))
	for k, v := range m {
		out = append(out, metrics.Sample{Labels: []string{k}, Value: float64(v)})
	}
	return out
}

// computesByState counts computes per state at scrape time, with every
// state present so that a dashboard sees zeros rather than gaps.
func computesByState(st store.Store) []metrics.Sample {
	counts := map[store.ComputeState]int{}
	for _, s := range []store.ComputeState{store.StateCreating, store.StateSuspended, store.StateResuming,
		store.StateActive, store.StateSuspending, store.StateFailed, store.StateDestroying} {
		counts[s] = 0
	}
	page := store.Page{Limit: 1000}
	for {
		batch, err := listComputes(st, page)
		if err != nil {
			return nil
		}
		for _, c := range batch {
			counts[c.State]++
		}
		if len(batch) < page.Limit {
			break
		}
		page.After = batch[len(batch)-1].ID
	}
	out := make([]metrics.Sample, 0, len(counts))
	for s, n := range counts {
		out = append(out, metrics.Sample{Labels: []string{string(s)}, Value: float64(n)})
	}
	return out
}

// listComputes reads one page of computes within scrapeStoreTimeout.
func listComputes(st store.Store, page store.Page) ([]store.Compute, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeStoreTimeout)
	defer cancel()
	return st.ListComputes(ctx, page)
}

// versionOf asks the driver for the version its computes run, if it knows.
func versionOf(drv compute.Driver) string {
	if v, ok := drv.(interface{ Version() string }); ok && v.Version() != "" {
		return v.Version()
	}
	return ""
}
