// Package local is the compute driver that runs each compute as a mariadbd
// process on this machine. Every compute owns one folder under Options.Dir:
//
//	<Dir>/<compute id>/
//	    data/            the datadir (copied from a per-version template)
//	    my.cnf           generated on every start from the compute's spec
//	    mariadbd.log     mariadbd's error log, stdout and stderr
//	    admin.password   the daemon's admin password for this compute (0600)
//	    init.sql         present until the first start has applied that password
//	    run/             socket and pid file, mode 0700: only the daemon connects
//	    tmp/             tmpdir; files/ is secure_file_priv
//
// mariadbd runs in its own session so that it outlives a killed daemon; the
// next daemon adopts it from its pid file.
package local

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/local/cgroup"
	"github.com/serverlessd/serverlessd/compute/mariadb"
	"github.com/serverlessd/serverlessd/store"
)

const (
	// AdminUser is the daemon's own account in every compute, as
	// 'serverlessd_admin'@'localhost'. Role names starting with "serverlessd"
	// are reserved (compute.ValidateRoleName), so no user can be created
	// with this name, and a 'name'@'localhost' never shadows a 'name'@'%'.
	AdminUser = mariadb.AdminUser
	// DefaultStopTimeout is how long a graceful stop may take before SIGKILL.
	DefaultStopTimeout = 60 * time.Second
	// DefaultMemory sizes a compute whose spec gives no memory.
	DefaultMemory = "256Mi"
	// maxSocketPath is sun_path's 108 bytes minus the terminating NUL.
	maxSocketPath = 107
)

// Options configure a Driver.
type Options struct {
	// Dir is the root folder for computes, e.g. <data_dir>/computes; one
	// subfolder per compute id.
	Dir string
	// Mariadbd is the server binary; empty looks up "mariadbd" in PATH, then
	// /usr/sbin/mariadbd.
	Mariadbd string
	// InstallDB is mariadb-install-db; empty looks next to mariadbd, then in PATH.
	InstallDB string
	// TemplatesDir holds one template datadir per mariadbd version; empty
	// means "templates" next to Dir.
	TemplatesDir string
	// StopTimeout is the graceful stop timeout before SIGKILL (default 60s).
	StopTimeout time.Duration
	// UIDs is the range of uids computes run as when the daemon is root
	// (default DefaultUIDRange). It is ignored otherwise: computes then run
	// as the daemon's own user, which New logs.
	UIDs UIDRange
	// Binlog turns mariadbd's binary log on, for point-in-time restore.
	Binlog bool
	// Logger receives the driver's logs (default slog.Default()).
	Logger *slog.Logger
}

// Driver runs computes as local mariadbd processes. It implements
// compute.Driver and is safe for concurrent use.
type Driver struct {
	opts      Options
	log       *slog.Logger
	mariadbd  string
	installDB string
	version   string
	user      string // mariadbd --user; empty when the user has no name
	owners    owners // per-compute uids; owners.r is nil unless root
	cgroups   bool   // computes get a cgroup with their resource limits
	cpus      *cpuPlacer

	uidMu sync.Mutex // one uid allocation at a time

	templateMu sync.Mutex // one template build at a time

	mu     sync.Mutex
	procs  map[string]*instance       // running mariadbd by compute id
	locks  map[string]chan struct{}   // per-compute operation lock
	onExit func(id string, err error) // crash handler
	// sysSizes caches the size of each compute's system schema folders
	// ("<id>/mysql") but for their growable files, for StorageBytes.
	sysSizes map[string]int64
}

var _ compute.Driver = (*Driver)(nil)

// New checks the binaries, reads mariadbd's version and prepares Dir.
func New(opts Options) (*Driver, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("local driver: Dir is required")
	}
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	mariadbd, err := findMariadbd(opts.Mariadbd)
	if err != nil {
		return nil, err
	}
	installDB, err := findInstallDB(opts.InstallDB, mariadbd)
	if err != nil {
		return nil, err
	}
	version, err := mariadbdVersion(mariadbd)
	if err != nil {
		return nil, err
	}
	// Searchable by others (not listable) when root: computes run as their
	// own uids and walk through these folders to their own.
	if err := os.MkdirAll(opts.Dir, dirMode()); err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	d := &Driver{
		opts: opts, log: opts.Logger.With("component", "local-driver"),
		mariadbd: mariadbd, installDB: installDB, version: version, user: processUser(),
		owners: owners{dir: opts.Dir},
		procs:  map[string]*instance{}, locks: map[string]chan struct{}{}, sysSizes: map[string]int64{},
		cpus: newCPUPlacer(allowedCPUs()),
	}
	if err := d.isolate(); err != nil {
		return nil, err
	}
	d.removeLeftovers()
	return d, nil
}

// isolate sets up per-compute uids when the daemon is root: Dir becomes
// searchable (not listable) by others, so that each compute's mariadbd can
// reach its own folder. Otherwise it says what is not enforced.
func (d *Driver) isolate() error {
	if os.Geteuid() != 0 {
		d.log.Warn("the daemon is not root: computes run as its own user, so per-compute uids are not enforced " +
			"(a compute's mariadbd could read another compute's files)")
		return nil
	}
	r := d.opts.UIDs
	d.owners.r = &r
	d.user = "" // mariadbd starts as the compute's uid directly
	if err := os.Chmod(d.opts.Dir, 0o711); err != nil {
		return fmt.Errorf("local driver: %w", err)
	}
	if err := reachable(d.opts.Dir); err != nil {
		return fmt.Errorf("local driver: %w", err)
	}
	d.log.Info("computes run as unprivileged uids", "uid_range", fmt.Sprintf("%d-%d", r.First, r.Last))
	if ok, reason := cgroup.Available(); ok {
		d.cgroups = true
	} else {
		d.log.Warn("cgroups are not available: computes' memory, CPU and task limits are not enforced", "reason", reason)
	}
	return nil
}

// normalize applies defaults and makes the paths absolute: they end up in
// my.cnf and in mariadbd's command line, which adoption matches exactly.
func (o *Options) normalize() error {
	var err error
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return fmt.Errorf("local driver: %w", err)
	}
	if o.TemplatesDir == "" {
		o.TemplatesDir = filepath.Join(filepath.Dir(o.Dir), "templates")
	}
	if o.TemplatesDir, err = filepath.Abs(o.TemplatesDir); err != nil {
		return fmt.Errorf("local driver: %w", err)
	}
	// my.cnf quotes paths; these characters would need escapes we never want.
	for _, p := range []string{o.Dir, o.TemplatesDir} {
		if strings.ContainsAny(p, "\"\\\n\r'") {
			return fmt.Errorf("local driver: path %q contains quotes, backslashes or newlines", p)
		}
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.UIDs == (UIDRange{}) {
		o.UIDs = DefaultUIDRange
	}
	if o.UIDs.First <= 0 || o.UIDs.Last < o.UIDs.First || o.UIDs.Last >= 1<<31 {
		return fmt.Errorf("local driver: uid range %d-%d: give two ids above 0, the first not above the last", o.UIDs.First, o.UIDs.Last)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// removeLeftovers deletes half-provisioned or half-destroyed folders that a
// killed daemon left behind. One daemon owns Dir, so none are in use.
func (d *Driver) removeLeftovers() {
	entries, _ := os.ReadDir(d.opts.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), provisionPrefix) || strings.HasPrefix(e.Name(), destroyPrefix) {
			_ = os.RemoveAll(filepath.Join(d.opts.Dir, e.Name()))
		}
	}
}

// Name is the driver's config name.
func (d *Driver) Name() string { return "local" }

// Version is mariadbd's version string, e.g. "10.11.19-MariaDB-0+deb12u1".
func (d *Driver) Version() string { return d.version }

// SetExitHandler registers fn, called (on its own goroutine, which may call
// back into the driver) when a ready mariadbd exits without a Stop.
func (d *Driver) SetExitHandler(fn func(computeID string, err error)) {
	d.mu.Lock()
	d.onExit = fn
	d.mu.Unlock()
}

// Admin returns the daemon's admin credentials for the compute.
func (d *Driver) Admin(ctx context.Context, c *store.Compute) (compute.Credentials, error) {
	l, err := d.layoutFor(c.ID)
	if err != nil {
		return compute.Credentials{}, err
	}
	return l.admin()
}

// lock takes the compute's operation lock, so that Start, Stop, Provision,
// Destroy and adoption never interleave on one compute. It returns the
// unlock function, or ctx's error if ctx ends first.
func (d *Driver) lock(ctx context.Context, id string) (func(), error) {
	d.mu.Lock()
	ch, ok := d.locks[id]
	if !ok {
		ch = make(chan struct{}, 1)
		d.locks[id] = ch
	}
	d.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("compute %s is busy: %w", id, ctx.Err())
	}
}

// validID keeps compute ids to one safe path component.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// layoutFor returns the compute's folder layout after checking the id and
// the socket path's length.
func (d *Driver) layoutFor(id string) (layout, error) {
	if !validID.MatchString(id) {
		return layout{}, fmt.Errorf("local driver: invalid compute id %q", id)
	}
	l := layout{root: filepath.Join(d.opts.Dir, id)}
	if n := len(l.socket()); n > maxSocketPath {
		return layout{}, fmt.Errorf("local driver: socket path %s is %d bytes, over the %d-byte limit of unix sockets: use a shorter data_dir",
			l.socket(), n, maxSocketPath)
	}
	return l, nil
}

// Folder is the compute's folder: its datadir, my.cnf and logs. While the
// compute is suspended nothing writes to it.
func (d *Driver) Folder(c *store.Compute) string { return filepath.Join(d.opts.Dir, c.ID) }
