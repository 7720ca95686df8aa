package compute

import (
	"context"
	"errors"

	"github.com/serverlessd/serverlessd/store"
)

// ErrNotProvisioned means the driver holds no storage for the compute.
var ErrNotProvisioned = errors.New("compute is not provisioned")

// Instance is a running backend that a driver found, used by reconciliation.
type Instance struct {
	ComputeID string
	Address   string
	// PID is the process id for the local driver (0 elsewhere).
	PID int
}

// Driver runs computes. It knows nothing of the proxy, the API or the store's
// state machine: the Manager drives it and records every transition.
type Driver interface {
	// Name is the driver's config name ("local", "kubernetes"). It is
	// recorded on each compute and shown to users; the manager decides
	// nothing by it (see NodeLocal).
	Name() string
	// NodeLocal reports whether the driver's computes live on one node's
	// disk and belong to that node (local): only that node's daemon may
	// run them, and it must stop them when it stops. A shared driver's
	// computes (kubernetes) are reachable from every node and outlive one
	// daemon.
	NodeLocal() bool
	// Provision creates the compute's storage (datadir or PVC) and the admin
	// credentials. It is idempotent.
	Provision(ctx context.Context, c *store.Compute) error
	// Start runs the compute and returns once a real connection to it
	// succeeds, with the address the proxy should dial ("unix:/path" or
	// "ip:port").
	Start(ctx context.Context, c *store.Compute) (address string, err error)
	// Stop shuts the compute down gracefully (InnoDB flushed), forcing it
	// only past the driver's stop timeout. Stopping a stopped compute is a no-op.
	Stop(ctx context.Context, c *store.Compute) error
	// Destroy stops the compute and removes all its storage.
	Destroy(ctx context.Context, c *store.Compute) error
	// Running lists the computes whose backends run now, including ones left
	// by an earlier daemon (adopted by the driver as a side effect).
	Running(ctx context.Context) ([]Instance, error)
	// Admin returns credentials for the daemon's own administrative account
	// on the compute. Users can never log in as it.
	Admin(ctx context.Context, c *store.Compute) (Credentials, error)
	// StorageBytes is the storage the compute uses (local: the datadir's
	// size; kubernetes: the volume's size), for usage metering.
	StorageBytes(ctx context.Context, c *store.Compute) (int64, error)
	// BoundsStorage reports whether the driver itself keeps a compute
	// within its storage size (a volume of that size: kubernetes), so the
	// manager does not measure it against the limit. Otherwise (local)
	// StorageBytes measures use, and the manager makes a compute at its
	// limit read-only.
	BoundsStorage() bool
	// SetExitHandler registers fn, called when a compute's backend exits
	// without being asked to (a crash).
	SetExitHandler(fn func(computeID string, err error))
}

// Credentials are a user and cleartext password for a backend.
type Credentials struct {
	User     string
	Password string
}

// BackendChecker is a driver that can tell, when a client could not reach a
// running compute, whether its backend will answer again at the same
// address (restarted in place) or is lost.
type BackendChecker interface {
	// CheckBackend waits, within a bound of its own, until the backend of
	// c answers at addr, and returns an error when it will not: its Pod is
	// gone, replaced, or on a lost node.
	CheckBackend(ctx context.Context, c *store.Compute, addr string) error
}
