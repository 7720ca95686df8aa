package backup

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the backup service's Prometheus series.
type Metrics struct {
	behind   prometheus.Gauge
	failures prometheus.Counter
}

// NewMetrics returns the series, to be registered with Collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		behind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "serverlessd_backup_behind_computes",
			Help: "Computes whose binary logs or snapshot could not be uploaded yet (retrying).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "serverlessd_backup_upload_failures_total",
			Help: "Backup uploads that failed and were retried.",
		}),
	}
}

// Collectors lists the series for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.behind, m.failures}
}

func (m *Metrics) setBehind(n int) {
	if m != nil {
		m.behind.Set(float64(n))
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}
