package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	kubedriver "github.com/serverlessd/serverlessd/compute/kubernetes"
	"github.com/serverlessd/serverlessd/compute/local"
	"github.com/serverlessd/serverlessd/config"
	"github.com/serverlessd/serverlessd/console"
	"github.com/serverlessd/serverlessd/machine"
	"github.com/serverlessd/serverlessd/metrics"
	"github.com/serverlessd/serverlessd/proxy"
	"github.com/serverlessd/serverlessd/quota"
	"github.com/serverlessd/serverlessd/scheduler"
	"github.com/serverlessd/serverlessd/server"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/cache"
	"github.com/serverlessd/serverlessd/store/postgres"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// serveFlags maps config keys to the serve command's flags.
var serveFlags = map[string]string{
	"data_dir":     "data-dir",
	"api.listen":   "api-listen",
	"proxy.listen": "proxy-listen",
	"log.level":    "log-level",
}

func newServe(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: API, MySQL proxy, idle scheduler and compute driver",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(g.configPath, cmd.Flags(), serveFlags)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, newLogger(cfg.Log, os.Stderr))
		},
	}
	f := cmd.Flags()
	f.String("data-dir", "", "where state and computes live (default ~/.local/share/serverlessd)")
	f.String("api-listen", "", "HTTP API address (default 127.0.0.1:8080)")
	f.String("proxy-listen", "", "MySQL listener address (default 127.0.0.1:3306)")
	f.String("log-level", "", "debug, info, warn or error (default info)")
	mustComplete(cmd.MarkFlagDirname("data-dir"))
	mustComplete(cmd.RegisterFlagCompletionFunc("log-level",
		cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp)))
	return cmd
}

func newLogger(c config.Log, w *os.File) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// daemon is the set of subsystems `serve` runs under one context.
type daemon struct {
	cfg     config.Config
	log     *slog.Logger
	store   store.Store
	mgr     *compute.Manager
	api     *server.Server
	proxy   *proxy.Server
	sched   *scheduler.Scheduler
	backups *backup.Service    // nil when backups are off
	leader  *kubedriver.Leader // nil unless daemons share the computes
}

// serve starts every subsystem, runs until ctx ends (SIGTERM) or one fails,
// then shuts down in order: stop accepting (API, proxy), suspend every
// compute cleanly, close the store.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	t0 := time.Now()
	d, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.store.Close()
	apiLn, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w (is another serverlessd running? set api.listen)", cfg.API.Listen, err)
	}
	proxyLn, err := net.Listen("tcp", cfg.Proxy.Listen)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("listen for MySQL on %s: %w (is another MySQL server or serverlessd running? set proxy.listen)", cfg.Proxy.Listen, err)
	}
	log.Info("serverlessd ready", "version", Version, "api", apiLn.Addr().String(), "mysql", proxyLn.Addr().String(),
		"data_dir", cfg.DataDir, "store", cfg.Store.Driver, "compute", cfg.Compute.Driver,
		"startup_ms", time.Since(t0).Milliseconds())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.api.Serve(apiLn) })
	g.Go(func() error {
		if err := d.proxy.Serve(proxyLn); !errors.Is(err, proxy.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return d.sched.Run(gctx) })
	if d.leader != nil {
		// Every daemon reports what its sessions do; the leader settles
		// the running computes and suspends idle ones. Settling may wait
		// on backends (a Pod on a dead node, one still starting): the
		// daemon serves meanwhile, so that one lost node does not take
		// every project down with it.
		g.Go(func() error { d.mgr.RunShareActivity(gctx, d.cfg.Scheduler.Interval); return nil })
		g.Go(func() error { d.leader.Run(gctx, d.lead); return nil })
	}
	<-gctx.Done()
	d.shutdown()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// lead is what the leader of daemons sharing the computes does until it
// stops leading: settle the running computes (retried until it succeeds),
// then, every minute, finish the operations that no daemon runs any more.
func (d *daemon) lead(ctx context.Context) {
	for {
		err := d.mgr.SettleRunning(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		d.log.Error("could not reconcile running computes; retrying in 10 s", "component", "compute", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.mgr.FinishStaleOperations(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("could not finish stale operations", "component", "compute", "err", err)
			}
		}
	}
}

// open builds the store, the driver and the manager, and reconciles.
func open(ctx context.Context, cfg config.Config, log *slog.Logger) (*daemon, error) {
	// As root, computes run as their own uids and walk through the data
	// dir to their folders: it is searchable, not listable, by others.
	// Everything else in it is private (state.db, tls/ are mode 0600/0700).
	mode := os.FileMode(0o700)
	if os.Geteuid() == 0 {
		mode = 0o711
	}
	if err := os.MkdirAll(cfg.DataDir, mode); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	drv, err := openDriver(cfg, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	met := metrics.New(cfg.Metrics.PerProjectLabels)
	quotas := &quota.Checker{Store: st}
	mopts := compute.Options{Store: st, Driver: drv, Node: cfg.NodeName, Logger: log, Metrics: met,
		DefaultSpec: defaultSpec(cfg), MemoryBudget: memoryBudget(cfg, log), Quotas: quotas}
	backups, err := backupService(ctx, cfg, st, drv, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	if backups != nil {
		mopts.AfterSuspend, mopts.AfterProvision = backups.AfterSuspend, backups.AfterProvision
	}
	mgr := compute.New(mopts)
	if err := mgr.FinishStaleOperations(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if drv.NodeLocal() {
		// Local backends answer at once: settle them before the first
		// login, which then never meets a dead address.
		if err := mgr.SettleRunning(ctx); err != nil {
			st.Close()
			return nil, err
		}
	}
	pcfg := proxyConfig(cfg, versionOf(drv))
	pcfg.OnReattach = met.ObserveReattach
	pcfg.OnPoolWait, pcfg.OnPoolGone = met.ObservePoolWait, met.ForgetPool
	if kd, ok := drv.(*kubedriver.Driver); ok {
		key, err := bindKey(ctx, kd, filepath.Join(cfg.DataDir, "bind"))
		if err != nil {
			st.Close()
			return nil, err
		}
		pcfg.BindKey = key
		mgr.SetBindKey(key)
	}
	px, err := newProxy(ctx, pcfg, drv, st, mgr, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	mgr.SetDetacher(px.Detach)
	registerMetrics(met, st, mgr, px)
	var leader *kubedriver.Leader
	if kd, ok := drv.(*kubedriver.Driver); ok {
		leader = kd.Leader(cfg.NodeName + "_" + store.NewID("d"))
	}
	if backups != nil {
		if leader != nil {
			backups.Leading = leader.IsLeader
		}
		backups.Computes, backups.Metrics = mgr, backup.NewMetrics()
		met.Register(backups.Metrics.Collectors()...)
		backups.Start()
		backups.Recover(st)
	}
	api := server.New(server.Options{
		Store: st, Manager: mgr, Tokens: cfg.API.Tokens, ProxyAddr: cfg.Proxy.Listen, Logger: log,
		Limits:        server.Limits{Images: allowedImages(cfg)},
		DefaultQuotas: store.TenantQuotas(cfg.Tenants.DefaultQuotas),
		Metrics:       &server.Metrics{Full: met.Handler(), Public: met.PublicHandler()},
		Extra:         console.Routes(),
		Backups:       apiBackups(backups),
	})
	sopts := scheduler.Options{Store: st, Manager: mgr, Interval: cfg.Scheduler.Interval,
		StorageInterval: cfg.Scheduler.StorageInterval, Metrics: met, Logger: log, Spent: quotas.Spent}
	if leader != nil {
		sopts.Leading = leader.IsLeader
	}
	sched := scheduler.New(sopts)
	return &daemon{cfg: cfg, log: log, store: st, mgr: mgr, api: api, proxy: px, sched: sched, backups: backups,
		leader: leader}, nil
}

// newProxy sets up the MySQL listener. With kubernetes and no configured
// certificate, the self-signed one it makes (and its RSA key) are kept in a
// Secret: every replica and every restart of the daemon, whose data dir is
// an emptyDir, presents the same one.
func newProxy(ctx context.Context, pcfg proxy.Config, drv compute.Driver, st store.Store, mgr *compute.Manager, log *slog.Logger) (*proxy.Server, error) {
	kd, ok := drv.(*kubedriver.Driver)
	var keep *kubedriver.FileSecret
	if ok && pcfg.TLSCertFile == "" {
		keep = kd.FileSecret(proxyTLSSecret, pcfg.DataDir, proxy.GeneratedFiles...)
		found, err := keep.Restore(ctx)
		if err != nil {
			return nil, fmt.Errorf("proxy certificate: %w", err)
		}
		if found {
			keep = nil
		}
	}
	px, err := proxy.New(pcfg, proxy.StoreDirectory{Store: st}, mgr, log)
	if err != nil {
		return nil, fmt.Errorf("set up the MySQL proxy: %w", err)
	}
	if keep != nil {
		if err := keep.Save(ctx); err != nil {
			return nil, fmt.Errorf("proxy certificate: %w", err)
		}
		log.Info("proxy certificate made and kept in a secret", "component", "proxy", "secret", proxyTLSSecret)
	}
	return px, nil
}

// bindKey returns the key the computes' role accounts are bound with
// (compute.Manager.SetBindKey), kept in the Secret serverlessd-bind-key: a
// Pod's IP is reachable from the whole cluster unless a NetworkPolicy says
// otherwise, and a tenant's password must open its compute only through
// the daemon. Every replica uses the one key: if two make one at once, the
// Secret created first wins and both read it back.
func bindKey(ctx context.Context, kd *kubedriver.Driver, dir string) ([]byte, error) {
	const file = "bind.key"
	keep := kd.FileSecret(bindKeySecret, dir, file)
	found, err := keep.Restore(ctx)
	if err != nil {
		return nil, fmt.Errorf("bind key: %w", err)
	}
	if !found {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(rand.Text()), 0o600); err != nil {
			return nil, err
		}
		if err := keep.Save(ctx); err != nil {
			return nil, fmt.Errorf("bind key: %w", err)
		}
		if _, err := keep.Restore(ctx); err != nil {
			return nil, fmt.Errorf("bind key: %w", err)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("bind key in %s is unusable (%v): delete the Secret %s only if no compute runs", dir, err, bindKeySecret)
	}
	return key, nil
}

// bindKeySecret keeps the key of bindKey.
const bindKeySecret = "serverlessd-bind-key"

// proxyTLSSecret is the Secret that keeps the proxy's self-signed
// certificate on Kubernetes.
const proxyTLSSecret = "serverlessd-proxy-tls"

func openStore(ctx context.Context, cfg config.Config) (store.Store, error) {
	switch cfg.Store.Driver {
	case "sqlite":
		path := cfg.Store.DSN
		if path == "" {
			path = filepath.Join(cfg.DataDir, "state.db")
		}
		st, err := sqlite.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
		}
		// This daemon is the file's only writer: every write goes through
		// the cache and invalidates it, so a long TTL is safe.
		return cache.New(st, time.Hour), nil
	case "postgres":
		st, err := postgres.Open(ctx, cfg.Store.DSN)
		if err != nil {
			return nil, err
		}
		// Other daemons may write the same database: bound staleness.
		return cache.New(st, 2*time.Second), nil
	default:
		return nil, fmt.Errorf("store.driver %q is not available in this build", cfg.Store.Driver)
	}
}

func openDriver(cfg config.Config, log *slog.Logger) (compute.Driver, error) {
	switch cfg.Compute.Driver {
	case "local":
		first, last, err := cfg.Compute.Local.UIDs()
		if err != nil {
			return nil, err
		}
		return local.New(local.Options{
			Dir:         filepath.Join(cfg.DataDir, "computes"),
			Mariadbd:    cfg.Compute.Local.Mariadbd,
			InstallDB:   cfg.Compute.Local.InstallDB,
			StopTimeout: cfg.Compute.StopTimeout,
			UIDs:        local.UIDRange{First: first, Last: last},
			Binlog:      cfg.Backup.Enabled,
			Logger:      log,
		})
	case "kubernetes":
		return openKubernetes(cfg, log)
	default:
		return nil, fmt.Errorf("compute.driver %q is not available in this build", cfg.Compute.Driver)
	}
}

// defaultSpec is what a new compute runs with when its request names none.
// backupService backs up computes when backups are on. The daemon ships
// a local compute's binary logs while it runs and snapshots it after each
// clean suspend; a backup agent Pod does both for a Kubernetes compute
// after each suspend.
func backupService(ctx context.Context, cfg config.Config, st store.Store, drv compute.Driver, log *slog.Logger) (*backup.Service, error) {
	if !cfg.Backup.Enabled {
		return nil, nil
	}
	svc := &backup.Service{Store: st, Log: log, MaxDelay: cfg.Backup.BinlogMaxDelay, Interval: cfg.Backup.Interval,
		Retention: cfg.Backup.Retention}
	switch d := drv.(type) {
	case *local.Driver:
		svc.DataDir = func(c *store.Compute) (string, bool) { return d.DataDir(c), true }
		svc.Staging = d.Staging
	case *kubedriver.Driver:
		if d.AgentImage() == "" {
			return nil, fmt.Errorf("backups: %w", kubedriver.ErrNoAgentImage)
		}
		svc.DataDir = func(*store.Compute) (string, bool) { return "", false }
		svc.Agent = d.RunAgent
	default:
		log.Warn("backups are not available for this compute driver", "component", "backup", "driver", drv.Name())
		return nil, nil
	}
	t, where, err := backupTarget(ctx, cfg)
	if err != nil {
		return nil, err
	}
	svc.Target = t
	log.Info("backups on: binary logs shipped, snapshots after clean suspends", "component", "backup",
		"target", where, "binlog_max_delay", cfg.Backup.BinlogMaxDelay, "driver", drv.Name())
	return svc, nil
}

// apiBackups keeps a nil service a nil interface.
func apiBackups(b *backup.Service) server.Backups {
	if b == nil {
		return nil
	}
	return b
}

// backupTarget opens the configured backup target and names it for the log.
func backupTarget(ctx context.Context, cfg config.Config) (backup.Target, string, error) {
	if cfg.Backup.Target == "s3" {
		o := cfg.Backup.S3
		t, err := backup.NewS3(ctx, backup.S3Options{Endpoint: o.Endpoint, Bucket: o.Bucket, Prefix: o.Prefix,
			Region: o.Region, AccessKeyID: o.AccessKeyID, SecretAccessKey: o.SecretAccessKey})
		if err != nil {
			return nil, "", fmt.Errorf("backup target: %w", err)
		}
		return t, "s3://" + o.Bucket + "/" + o.Prefix, nil
	}
	dir := cfg.Backup.Dir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "backups")
	}
	return backup.Dir{Root: dir}, dir, nil
}

// memoryBudget is the local node's memory budget for its computes; a
// Kubernetes cluster schedules its own Pods.
func memoryBudget(cfg config.Config, log *slog.Logger) int64 {
	if cfg.Compute.Driver != "local" {
		return 0
	}
	n, _ := cfg.Compute.Local.MemoryBudget(machine.Memory()) // validated with the config
	log.Info("node memory budget for computes", "component", "compute", "bytes", n)
	return n
}

// allowedImages are the images a compute may name: with kubernetes, the
// default image and kubernetes.allowed_images; the local driver runs the
// machine's mariadbd whatever the image says.
func allowedImages(cfg config.Config) []string {
	if cfg.Compute.Driver != "kubernetes" {
		return nil
	}
	return append([]string{cfg.Kubernetes.Image}, cfg.Kubernetes.AllowedImages...)
}

func defaultSpec(cfg config.Config) store.ComputeSpec {
	if cfg.Compute.Driver == "kubernetes" {
		k := cfg.Kubernetes
		return store.ComputeSpec{Image: k.Image, Storage: k.StorageSize, Resources: store.Resources{CPU: k.CPU, Memory: k.Memory}}
	}
	return store.ComputeSpec{Storage: cfg.Compute.DefaultStorage, Resources: store.Resources{Memory: cfg.Compute.DefaultMemory}}
}

// shutdown stops the subsystems in order. Each step gets its own deadline so
// that one slow step cannot starve the next.
func (d *daemon) shutdown() {
	t0 := time.Now()
	if delay := d.cfg.Shutdown.DrainDelay; delay > 0 {
		// Readiness fails first; new clients still get in until load
		// balancers have noticed (a Service's endpoints take seconds).
		d.log.Info("draining: readiness fails, new logins accepted for the drain delay", "drain_delay", delay)
		d.api.SetDraining()
		time.Sleep(delay)
	}
	d.log.Info("shutting down: no new requests or logins, then suspending computes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := d.api.Shutdown(ctx); err != nil {
		d.log.Warn("API shutdown", "err", err)
	}
	// Sessions get a few seconds to finish their statements; whatever is
	// left is closed before the computes stop.
	pctx, pcancel := context.WithTimeout(context.Background(), d.cfg.Shutdown.DrainTimeout)
	if err := d.proxy.Shutdown(pctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		d.log.Warn("proxy shutdown", "err", err)
	}
	pcancel()
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), d.cfg.Compute.StopTimeout+10*time.Second)
	defer cancel()
	if err := d.mgr.SuspendAll(ctx, compute.ReasonShutdown); err != nil {
		d.log.Error("some computes did not suspend cleanly", "err", err)
	}
	if d.backups != nil {
		// The binary logs the suspends just closed are shipped before the
		// daemon goes; snapshots are left to the next suspend.
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		d.backups.Drain(dctx)
		dcancel()
		d.backups.Stop()
	}
	d.log.Info("shutdown complete", "duration_ms", time.Since(t0).Milliseconds())
}
