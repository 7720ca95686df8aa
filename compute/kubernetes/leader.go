package kubernetes

import (
	"context"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease that elects, among the daemons that share this
// driver's namespace, the one that suspends idle computes and reconciles.
const LeaseName = "serverlessd-leader"

// Leader elects one daemon among those sharing the namespace, with
// client-go's leader election on a Lease. Every daemon serves logins and
// API calls; only the leader drives computes on its own initiative.
type Leader struct {
	d        *Driver
	identity string
	leading  atomic.Bool
}

// Leader returns an election in which this daemon runs as identity (its
// Pod name: unique among the live daemons).
func (d *Driver) Leader(identity string) *Leader {
	return &Leader{d: d, identity: identity}
}

// IsLeader reports whether this daemon leads now.
func (l *Leader) IsLeader() bool { return l.leading.Load() }

// Run takes part in the election until ctx ends; while it leads, lead runs
// with a context that ends the moment the lease is lost. A lost lease
// before ctx ends is run for again. At the end it hands the lease over at
// once rather than letting it expire.
func (l *Leader) Run(ctx context.Context, lead func(ctx context.Context)) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: l.d.opts.Namespace},
		Client:     l.d.cli.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.identity},
	}
	log := l.d.log.With("identity", l.identity, "lease", LeaseName)
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock,
			// The usual timings of Kubernetes' own controllers: a dead
			// leader is replaced within about 20 s (the lease, then a
			// retry); it idles computes only, which waits minutes anyway.
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Name:            LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					l.leading.Store(true)
					log.Info("leading: this daemon suspends idle computes and reconciles")
					lead(ctx)
				},
				OnStoppedLeading: func() {
					l.leading.Store(false)
					log.Info("not leading")
				},
				OnNewLeader: func(id string) {
					if id != l.identity {
						log.Info("another daemon leads", "leader", id)
					}
				},
			},
		})
	}
}
