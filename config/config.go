// Package config holds serverlessd's configuration. It is built in three
// steps, like litestream's: Default() gives every option its default, Load()
// layers the config file, SERVERLESSD_* environment variables and flags on top
// (through viper), and Validate() reports every bad value in one error.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/quantity"
)

// Config is the whole daemon configuration. The mapstructure tags are the
// stable config keys users and scripts depend on.
type Config struct {
	DataDir    string     `mapstructure:"data_dir"`
	NodeName   string     `mapstructure:"node_name"`
	API        API        `mapstructure:"api"`
	Proxy      Proxy      `mapstructure:"proxy"`
	Store      Store      `mapstructure:"store"`
	Compute    Compute    `mapstructure:"compute"`
	Scheduler  Scheduler  `mapstructure:"scheduler"`
	Shutdown   Shutdown   `mapstructure:"shutdown"`
	Kubernetes Kubernetes `mapstructure:"kubernetes"`
	Metrics    Metrics    `mapstructure:"metrics"`
	Tenants    Tenants    `mapstructure:"tenants"`
	Backup     Backup     `mapstructure:"backup"`
	Log        Log        `mapstructure:"log"`
}

// Backup configures backups: snapshots of suspended computes and their
// binary logs, for point-in-time restores.
type Backup struct {
	// Enabled turns the binary log on in every compute, ships it within
	// BinlogMaxDelay and takes a snapshot after every clean suspend where
	// anything changed.
	Enabled bool `mapstructure:"enabled"`
	// Target is "dir" (a local folder) or "s3".
	Target string `mapstructure:"target"`
	// Dir is the folder of the dir target; empty means <data_dir>/backups.
	Dir string `mapstructure:"dir"`
	S3  S3     `mapstructure:"s3"`
	// BinlogMaxDelay bounds how long a committed transaction waits to be
	// shipped: the binary log of a running compute is rotated this often.
	BinlogMaxDelay time.Duration `mapstructure:"binlog_max_delay"`
	// Interval is the longest a running compute goes without a snapshot:
	// one that never suspends gets a hot backup (mariadb-backup).
	Interval time.Duration `mapstructure:"interval"`
	// Retention is how far back restores reach; older backups are pruned,
	// and deleted projects can be brought back within it.
	Retention time.Duration `mapstructure:"retention"`
}

// S3 is an S3-compatible bucket. Credentials left empty come from the
// standard AWS environment variables and files.
type S3 struct {
	Endpoint        string `mapstructure:"endpoint"`
	Bucket          string `mapstructure:"bucket"`
	Prefix          string `mapstructure:"prefix"`
	Region          string `mapstructure:"region"`
	AccessKeyID     string `mapstructure:"access_key_id"`
	SecretAccessKey string `mapstructure:"secret_access_key"`
}

// Tenants configures what new tenants get.
type Tenants struct {
	// DefaultQuotas are a new tenant's quotas where its create names none.
	DefaultQuotas Quotas `mapstructure:"default_quotas"`
}

// Quotas are a tenant's quotas; zero is no limit. The fields are
// store.TenantQuotas's, in its order, so that one converts to the other.
type Quotas struct {
	MaxProjects              int    `mapstructure:"max_projects"`
	MaxComputeMemory         string `mapstructure:"max_compute_memory"`
	MaxConnectionsPerProject int    `mapstructure:"max_connections_per_project"`
	MaxStorage               string `mapstructure:"max_storage"`
	MaxActiveMemory          string `mapstructure:"max_active_memory"`
	ComputeSecondsPerMonth   int64  `mapstructure:"compute_seconds_per_month"`
}

// Kubernetes configures the kubernetes compute driver.
type Kubernetes struct {
	// Kubeconfig is a kubeconfig path; empty means the in-cluster config.
	Kubeconfig string `mapstructure:"kubeconfig"`
	Namespace  string `mapstructure:"namespace"`
	Image      string `mapstructure:"image"`
	// AllowedImages are the images a compute may name besides Image.
	AllowedImages []string          `mapstructure:"allowed_images"`
	StorageClass  string            `mapstructure:"storage_class"`
	StorageSize   string            `mapstructure:"storage_size"`
	CPU           string            `mapstructure:"cpu"`
	CPULimit      string            `mapstructure:"cpu_limit"`
	Memory        string            `mapstructure:"memory"`
	NodeSelector  map[string]string `mapstructure:"node_selector"`
	Tolerations   []Toleration      `mapstructure:"tolerations"`
	// AgentImage holds the serverlessd binary for backup agents' Pods;
	// empty means the daemon's own image, when it runs in a Pod.
	AgentImage string `mapstructure:"agent_image"`
	// AgentSecret names a Secret whose keys (AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY) become the backup agents' environment.
	AgentSecret string `mapstructure:"agent_secret"`
}

// Toleration mirrors a Pod toleration.
type Toleration struct {
	Key      string `mapstructure:"key"`
	Operator string `mapstructure:"operator"`
	Value    string `mapstructure:"value"`
	Effect   string `mapstructure:"effect"`
}

// Metrics configures the Prometheus metrics at /metrics.
type Metrics struct {
	// PerProjectLabels adds metrics labelled by project. Off by default:
	// the number of projects is unbounded.
	PerProjectLabels bool `mapstructure:"per_project_labels"`
}

// API is the HTTP control plane.
type API struct {
	Listen string   `mapstructure:"listen"`
	Tokens []string `mapstructure:"tokens"`
}

// Proxy is the MySQL listener.
type Proxy struct {
	Listen string `mapstructure:"listen"`
	// ServerVersion is the version in the greeting; empty means the version
	// of the mariadbd that computes run.
	ServerVersion      string        `mapstructure:"server_version"`
	TLSCert            string        `mapstructure:"tls_cert"`
	TLSKey             string        `mapstructure:"tls_key"`
	RequireTLS         bool          `mapstructure:"require_tls"`
	Domain             string        `mapstructure:"domain"`
	HandshakeTimeout   time.Duration `mapstructure:"handshake_timeout"`
	MaxHandshakePacket int           `mapstructure:"max_handshake_packet"`
	MaxConnections     int           `mapstructure:"max_connections"`
	// WakeTimeout bounds how long a login waits for its compute to start.
	WakeTimeout time.Duration `mapstructure:"wake_timeout"`
	// RateLimitBurst failed logins are allowed per source address; one more
	// is allowed every RateLimitInterval. A negative burst turns it off.
	RateLimitBurst    int           `mapstructure:"rate_limit_burst"`
	RateLimitInterval time.Duration `mapstructure:"rate_limit_interval"`
	// MaxConnectionsPerSource caps one source address's connections (IPv4
	// address or IPv6 /64), from accept to close. Negative: no cap.
	MaxConnectionsPerSource int `mapstructure:"max_connections_per_source"`
	// MaxConnectionsPerProject is a project's connection limit when its
	// config sets none, and the bound of one that does. Negative: none.
	MaxConnectionsPerProject int `mapstructure:"max_connections_per_project"`
	// Past AuthDelayThreshold recent failures against one role, answers
	// about it wait up to AuthDelayMax; one failure is forgotten every
	// AuthDelayDecay. A negative threshold turns the delay off.
	AuthDelayThreshold int           `mapstructure:"auth_delay_threshold"`
	AuthDelayMax       time.Duration `mapstructure:"auth_delay_max"`
	AuthDelayDecay     time.Duration `mapstructure:"auth_delay_decay"`
	// PinnedIdleTimeout ends a client session that stays idle this long
	// while pinned to its compute (an open transaction, locks), rolling
	// its transaction back; a project's pinned_idle_timeout overrides it.
	// 0 means never.
	PinnedIdleTimeout time.Duration `mapstructure:"pinned_idle_timeout"`
	// Relay moves sessions' commands and responses: event-loop (epoll,
	// the fastest; Linux) or goroutines (one per session).
	Relay string `mapstructure:"relay"`
}

// Store selects the state store backend.
type Store struct {
	Driver string `mapstructure:"driver"`
	DSN    string `mapstructure:"dsn"`
}

// Compute selects and configures the compute driver.
type Compute struct {
	Driver      string        `mapstructure:"driver"`
	StopTimeout time.Duration `mapstructure:"stop_timeout"`
	// DefaultMemory is a compute's memory when its spec names none.
	DefaultMemory string `mapstructure:"default_memory"`
	// DefaultStorage is a local compute's storage limit when its spec
	// names none.
	DefaultStorage string `mapstructure:"default_storage"`
	Local          Local  `mapstructure:"local"`
}

// Local configures the local mariadbd driver.
type Local struct {
	Mariadbd  string `mapstructure:"mariadbd"`
	InstallDB string `mapstructure:"install_db"`
	// UIDRange is "first-last": the uids computes run as when the daemon
	// is root, one per compute.
	UIDRange string `mapstructure:"uid_range"`
	// MaxMemory bounds the memory of the computes running on this node at
	// once (a quantity, "12Gi"); empty means 80% of the machine's memory.
	MaxMemory string `mapstructure:"max_memory"`
}

// MemoryBudget is MaxMemory in bytes, or machineMemory*8/10 when it is
// empty; 0 means no budget.
func (l Local) MemoryBudget(machineMemory int64) (int64, error) {
	if l.MaxMemory == "" {
		return machineMemory / 10 * 8, nil
	}
	n, err := quantity.Units(l.MaxMemory)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("%q must be positive", l.MaxMemory)
	}
	return n, nil
}

// UIDs parses UIDRange.
func (l Local) UIDs() (first, last int, err error) {
	a, b, ok := strings.Cut(l.UIDRange, "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || first <= 0 || last < first || last >= 1<<31 {
		return 0, 0, fmt.Errorf("%q is not a uid range: give first-last, e.g. 2100000-2165535", l.UIDRange)
	}
	return first, last, nil
}

// Scheduler configures the idle-suspend loop.
// Shutdown configures how a stopping daemon lets go of its clients.
type Shutdown struct {
	// DrainDelay is how long the daemon keeps accepting new logins and API
	// calls after SIGTERM while /readyz fails, so that a load balancer (a
	// Kubernetes Service) stops sending it new ones first. 0 stops
	// accepting at once.
	DrainDelay time.Duration `mapstructure:"drain_delay"`
	// DrainTimeout is how long open sessions get to finish their work
	// before they are closed.
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`
}

type Scheduler struct {
	Interval time.Duration `mapstructure:"interval"`
	// StorageInterval is how often computes that had writes are measured
	// against their storage limit.
	StorageInterval time.Duration `mapstructure:"storage_interval"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:  defaultDataDir(),
		NodeName: host,
		API:      API{Listen: "127.0.0.1:8080"},
		Proxy: Proxy{
			Listen:             "127.0.0.1:3306",
			HandshakeTimeout:   10 * time.Second,
			MaxHandshakePacket: 64 << 10,
			MaxConnections:     10000,
			WakeTimeout:        2 * time.Minute,
			RateLimitBurst:     10,
			RateLimitInterval:  time.Second,
			PinnedIdleTimeout:  15 * time.Minute,
			Relay:              "event-loop",
			// These mirror proxy.Config's defaults; its comments say why.
			MaxConnectionsPerSource:  1000,
			MaxConnectionsPerProject: 500,
			AuthDelayThreshold:       5,
			AuthDelayMax:             2 * time.Second,
			AuthDelayDecay:           10 * time.Second,
		},
		Store: Store{Driver: "sqlite"},
		Compute: Compute{
			Driver:         "local",
			StopTimeout:    60 * time.Second,
			DefaultMemory:  "256Mi",
			DefaultStorage: "10Gi",
			Local:          Local{UIDRange: "2100000-2165535"},
		},
		Scheduler: Scheduler{Interval: 30 * time.Second, StorageInterval: 2 * time.Second},
		Shutdown:  Shutdown{DrainTimeout: 5 * time.Second},
		Kubernetes: Kubernetes{
			Namespace:   "serverlessd",
			Image:       "mariadb:10.11.10",
			StorageSize: "10Gi",
			CPU:         "500m",
			CPULimit:    "1",
			Memory:      "1Gi",
			AgentSecret: "serverlessd-backup",
		},
		Backup: Backup{Target: "dir", BinlogMaxDelay: 60 * time.Second, Interval: 24 * time.Hour,
			Retention: 7 * 24 * time.Hour},
		Log: Log{Level: "info", Format: "text"},
	}
}

// defaultDataDir is $XDG_DATA_HOME/serverlessd, else ~/.local/share/serverlessd.
// As root it is /var/lib/serverlessd: computes then run as their own
// unprivileged uids, which cannot walk through root's home (mode 0700).
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/serverlessd"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "serverlessd")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "serverlessd")
	}
	return filepath.Join(home, ".local", "share", "serverlessd")
}

// Validate checks every option and returns one error listing each bad value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.NodeName == "" {
		bad("node_name", "must not be empty (it defaults to the hostname)")
	}
	checkAddr(bad, "api.listen", c.API.Listen)
	checkAddr(bad, "proxy.listen", c.Proxy.Listen)
	if !IsLoopback(c.API.Listen) && len(c.API.Tokens) == 0 {
		bad("api.tokens", "the API listens on non-loopback address %q, so at least one token is required", c.API.Listen)
	}
	for i, t := range c.API.Tokens {
		if len(t) < 16 {
			bad(fmt.Sprintf("api.tokens[%d]", i), "must be at least 16 characters")
		}
	}
	if (c.Proxy.TLSCert == "") != (c.Proxy.TLSKey == "") {
		bad("proxy.tls_cert", "proxy.tls_cert and proxy.tls_key must be set together")
	}
	if c.Proxy.HandshakeTimeout <= 0 {
		bad("proxy.handshake_timeout", "must be positive, got %s", c.Proxy.HandshakeTimeout)
	}
	if c.Proxy.Relay != "event-loop" && c.Proxy.Relay != "goroutines" {
		bad("proxy.relay", "must be event-loop or goroutines, got %q", c.Proxy.Relay)
	}
	if c.Proxy.MaxHandshakePacket < 1024 {
		bad("proxy.max_handshake_packet", "must be at least 1024 bytes, got %d", c.Proxy.MaxHandshakePacket)
	}
	if c.Proxy.MaxConnections < 1 {
		bad("proxy.max_connections", "must be at least 1, got %d", c.Proxy.MaxConnections)
	}
	if c.Proxy.WakeTimeout <= 0 {
		bad("proxy.wake_timeout", "must be positive, got %s", c.Proxy.WakeTimeout)
	}
	if c.Proxy.RateLimitInterval <= 0 {
		bad("proxy.rate_limit_interval", "must be positive, got %s", c.Proxy.RateLimitInterval)
	}
	validateProxyLimits(bad, c.Proxy)
	switch c.Store.Driver {
	case "sqlite":
	case "postgres":
		if c.Store.DSN == "" {
			bad("store.dsn", "is required when store.driver is postgres")
		}
	default:
		bad("store.driver", "must be sqlite or postgres, got %q", c.Store.Driver)
	}
	switch c.Compute.Driver {
	case "local", "kubernetes":
	default:
		bad("compute.driver", "must be local or kubernetes, got %q", c.Compute.Driver)
	}
	if c.Compute.StopTimeout <= 0 {
		bad("compute.stop_timeout", "must be positive, got %s", c.Compute.StopTimeout)
	}
	if _, _, err := c.Compute.Local.UIDs(); err != nil {
		bad("compute.local.uid_range", "%v", err)
	}
	if _, err := c.Compute.Local.MemoryBudget(0); err != nil {
		bad("compute.local.max_memory", "%v", err)
	}
	q := c.Tenants.DefaultQuotas
	for key, v := range map[string]string{"max_compute_memory": q.MaxComputeMemory, "max_active_memory": q.MaxActiveMemory, "max_storage": q.MaxStorage} {
		if _, err := quantity.Units(v); v != "" && err != nil {
			bad("tenants.default_quotas."+key, "%v", err)
		}
	}
	for key, v := range map[string]int64{"max_projects": int64(q.MaxProjects), "max_connections_per_project": int64(q.MaxConnectionsPerProject),
		"compute_seconds_per_month": q.ComputeSecondsPerMonth} {
		if v < 0 {
			bad("tenants.default_quotas."+key, "must be 0 (no limit) or more, got %d", v)
		}
	}
	validateBackup(bad, c.Backup)
	if c.Backup.Enabled && c.Compute.Driver == "kubernetes" && c.Backup.Target != "s3" {
		bad("backup.target", "must be s3 with the kubernetes driver: backup agents run in Pods, which cannot reach the daemon's folder")
	}
	if c.Shutdown.DrainDelay < 0 || c.Shutdown.DrainTimeout < 0 {
		bad("shutdown", "drain_delay and drain_timeout must not be negative, got %s and %s",
			c.Shutdown.DrainDelay, c.Shutdown.DrainTimeout)
	}
	if c.Scheduler.Interval < 100*time.Millisecond {
		bad("scheduler.interval", "must be at least 100ms, got %s", c.Scheduler.Interval)
	}
	if c.Scheduler.StorageInterval < 100*time.Millisecond {
		bad("scheduler.storage_interval", "must be at least 100ms, got %s", c.Scheduler.StorageInterval)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// validateBackup checks the backup target and delays.
func validateBackup(bad func(string, string, ...any), b Backup) {
	switch b.Target {
	case "dir":
	case "s3":
		if b.S3.Bucket == "" {
			bad("backup.s3.bucket", "is required when backup.target is s3")
		}
	default:
		bad("backup.target", "must be dir or s3, got %q", b.Target)
	}
	if b.BinlogMaxDelay < time.Second {
		bad("backup.binlog_max_delay", "must be at least 1s, got %s", b.BinlogMaxDelay)
	}
	if b.Interval < time.Second {
		bad("backup.interval", "must be at least 1s, got %s", b.Interval)
	}
	if b.Retention < time.Hour {
		bad("backup.retention", "must be at least 1h, got %s", b.Retention)
	}
}

// validateProxyLimits checks the per-source, per-project and per-role
// limits. 0 is refused where the proxy would read it as "the default",
// which here is already filled in: a 0 in the file is a mistake.
func validateProxyLimits(bad func(string, string, ...any), p Proxy) {
	if p.MaxConnectionsPerSource == 0 {
		bad("proxy.max_connections_per_source", "must be positive, or negative for no cap")
	}
	if p.MaxConnectionsPerProject == 0 {
		bad("proxy.max_connections_per_project", "must be positive, or negative for no default and no bound")
	}
	if p.AuthDelayThreshold == 0 {
		bad("proxy.auth_delay_threshold", "must be positive, or negative to turn the delay off")
	}
	if p.AuthDelayThreshold > 0 {
		if p.AuthDelayMax <= 0 || p.AuthDelayMax >= p.HandshakeTimeout {
			bad("proxy.auth_delay_max", "must be positive and below proxy.handshake_timeout (%s), got %s", p.HandshakeTimeout, p.AuthDelayMax)
		}
		if p.AuthDelayDecay <= 0 {
			bad("proxy.auth_delay_decay", "must be positive, got %s", p.AuthDelayDecay)
		}
	}
}

func checkAddr(bad func(string, string, ...any), key, addr string) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		bad(key, "must be host:port, got %q", addr)
	}
}

// IsLoopback reports whether a listen address only accepts local connections.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
