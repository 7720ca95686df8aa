package cli

import (
	"context"
	"path/filepath"

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
	}
}

// registerMetrics adds the gauges and counters read at scrape time: the
// computes by state, and the proxy's connection, failure and byte counts.
func registerMetrics(m *metrics.Metrics, st store.Store, mgr *compute.Manager, px *proxy.Server) {
	m.Register(
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
		metrics.NewFunc("proxy_bytes_total", "Bytes through the proxy: in is client to database, out is database to client.", true, []string{"direction"}, func() []metrics.Sample {
			in, out := mgr.TotalBytes()
			return []metrics.Sample{{Labels: []string{"in"}, Value: float64(in)}, {Labels: []string{"out"}, Value: float64(out)}}
		}),
	)
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
		batch, err := st.ListComputes(context.Background(), page)
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

// versionOf asks the driver for the version its computes run, if it knows.
func versionOf(drv compute.Driver) string {
	if v, ok := drv.(interface{ Version() string }); ok && v.Version() != "" {
		return v.Version()
	}
	return ""
}
