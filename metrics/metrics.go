// Package metrics holds serverlessd's Prometheus metrics. Every method is
// safe on a nil *Metrics, so tests and tools can run without them.
//
// Labels are bounded: kinds, triggers, actions and states are small fixed
// sets. Per-project labels exist only when turned on in config
// (metrics.per_project_labels), since the number of projects is unbounded.
package metrics

import (
	"maps"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

const namespace = "serverlessd"

// Metrics is the daemon's metric set.
type Metrics struct {
	reg        *prometheus.Registry
	perProject bool

	wake       *prometheus.HistogramVec
	suspends   *prometheus.CounterVec
	postponed  prometheus.Counter
	opFailures *prometheus.CounterVec
	readOnly   prometheus.Gauge
	projWakes  *prometheus.CounterVec // only with per-project labels
	reattach   *prometheus.HistogramVec
	poolWait   *prometheus.HistogramVec
}

// New builds the metric set on a fresh registry, with the Go runtime and
// process collectors.
func New(perProject bool) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), perProject: perProject}
	m.wake = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "wake_duration_seconds",
		Help:    "Time for Wake to return a backend address: cold (the compute was started) or warm (already running).",
		Buckets: []float64{.0005, .001, .005, .01, .025, .05, .1, .15, .2, .3, .4, .5, .75, 1, 2, 5, 10},
	}, []string{"kind"})
	m.suspends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "suspends_total",
		Help: "Computes suspended, by what triggered it (idle, api, shutdown, reconcile).",
	}, []string{"trigger"})
	m.postponed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "suspends_postponed_total",
		Help: "Idle suspends postponed because a client transaction or statement was running.",
	})
	m.opFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "operation_failures_total",
		Help: "Compute operations that failed, by action (create, start, suspend, destroy).",
	}, []string{"action"})
	m.readOnly = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "computes_storage_full",
		Help: "Computes read-only because they reached their storage limit.",
	})
	m.reattach = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "session_reattach_duration_seconds",
		Help:    "Time for an open client session to get a backend connection again (wake, login, state restored): cold (the compute was started) or warm.",
		Buckets: []float64{.0005, .001, .005, .01, .025, .05, .1, .15, .2, .3, .4, .5, .75, 1, 2, 5, 10},
	}, []string{"kind"})
	m.poolWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "proxy_pool_wait_seconds",
		Help:    "Time a pooled client session waited for a backend connection while its compute's pool was busy (granted or timed out), by compute.",
		Buckets: []float64{.0005, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
	}, []string{"compute"})
	m.reg.MustRegister(m.wake, m.suspends, m.reattach, m.poolWait, m.postponed, m.opFailures, m.readOnly,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if perProject {
		m.projWakes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "project_wakes_total",
			Help: "Wakes per project and kind (per-project labels are on).",
		}, []string{"project", "kind"})
		m.reg.MustRegister(m.projWakes)
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// PublicHandler serves the metrics without per-project detail: every
// series with a "project" label is left out, so that a scraper without an
// admin key learns nothing about who has which project.
func (m *Metrics) PublicHandler() http.Handler {
	return promhttp.HandlerFor(withoutProjects{m.reg}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// withoutProjects drops the series labelled with a project or a compute.
type withoutProjects struct{ g prometheus.Gatherer }

func (w withoutProjects) Gather() ([]*dto.MetricFamily, error) {
	families, err := w.g.Gather()
	out := families[:0]
	for _, f := range families {
		kept := f.Metric[:0]
		for _, m := range f.Metric {
			if !hasLabel(m, "project") && !hasLabel(m, "compute") {
				kept = append(kept, m)
			}
		}
		if f.Metric = kept; len(kept) > 0 {
			out = append(out, f)
		}
	}
	return out, err
}

func hasLabel(m *dto.Metric, name string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return true
		}
	}
	return false
}

// Register adds collectors (for example gauges read at scrape time).
func (m *Metrics) Register(cs ...prometheus.Collector) {
	if m != nil {
		m.reg.MustRegister(cs...)
	}
}

// Names returns the name of every metric family the registry exports,
// sorted, read from the collectors' descriptors: a family counts before its
// first sample (a vector with no labels set yet, a gauge read from pools
// that do not exist yet), which gathering would miss.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc)
	go func() { m.reg.Describe(ch); close(ch) }()
	seen := map[string]bool{}
	for d := range ch {
		// Desc keeps its name private; its String form starts with it.
		if sm := descName.FindStringSubmatch(d.String()); sm != nil {
			seen[sm[1]] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

var descName = regexp.MustCompile(`^Desc\{fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)

// ObserveWake records one Wake call.
func (m *Metrics) ObserveWake(projectID string, cold bool, d time.Duration) {
	if m == nil {
		return
	}
	kind := "warm"
	if cold {
		kind = "cold"
	}
	m.wake.WithLabelValues(kind).Observe(d.Seconds())
	if m.perProject {
		m.projWakes.WithLabelValues(projectID, kind).Inc()
	}
}

// ObservePoolWait records one wait for a backend connection of a
// compute's pool.
func (m *Metrics) ObservePoolWait(computeID string, d time.Duration) {
	if m == nil {
		return
	}
	m.poolWait.WithLabelValues(computeID).Observe(d.Seconds())
}

// ForgetPool drops a compute's pool series once its pool is gone, so
// that the labels stay bounded by the computes running.
func (m *Metrics) ForgetPool(computeID string) {
	if m == nil {
		return
	}
	m.poolWait.DeleteLabelValues(computeID)
}

// ObserveReattach records one client session's re-attach latency.
func (m *Metrics) ObserveReattach(cold bool, d time.Duration) {
	if m == nil {
		return
	}
	kind := "warm"
	if cold {
		kind = "cold"
	}
	m.reattach.WithLabelValues(kind).Observe(d.Seconds())
}

// Suspended counts a suspend by its trigger.
func (m *Metrics) Suspended(trigger string) {
	if m != nil {
		m.suspends.WithLabelValues(trigger).Inc()
	}
}

// StorageFull counts a compute made read-only (on) or writable again.
func (m *Metrics) StorageFull(on bool) {
	if m == nil {
		return
	}
	if on {
		m.readOnly.Inc()
	} else {
		m.readOnly.Dec()
	}
}

// Postponed counts an idle suspend put off because the compute was busy.
func (m *Metrics) Postponed() {
	if m != nil {
		m.postponed.Inc()
	}
}

// OperationFailed counts a failed compute operation.
func (m *Metrics) OperationFailed(action string) {
	if m != nil {
		m.opFailures.WithLabelValues(action).Inc()
	}
}

// Sample is one value of a metric read at scrape time.
type Sample struct {
	Labels []string
	Value  float64
}

// FuncCollector is a metric whose values are read by a function at scrape
// time: state that lives elsewhere (the store, the proxy's counters) is not
// copied into the metrics on every change.
type FuncCollector struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	read func() []Sample
}

// NewFunc returns a collector for serverlessd_<name> with the given labels.
// counter selects the counter type, else gauge.
func NewFunc(name, help string, counter bool, labels []string, read func() []Sample) *FuncCollector {
	kind := prometheus.GaugeValue
	if counter {
		kind = prometheus.CounterValue
	}
	return &FuncCollector{desc: prometheus.NewDesc(namespace+"_"+name, help, labels, nil), kind: kind, read: read}
}

// Describe implements prometheus.Collector.
func (f *FuncCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *FuncCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range f.read() {
		ch <- prometheus.MustNewConstMetric(f.desc, f.kind, s.Value, s.Labels...)
	}
}
