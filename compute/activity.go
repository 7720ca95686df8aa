package compute

import (
	"sync/atomic"
	"time"
)

// WakeResult is what Wake returns: where to dial the project's backend.
type WakeResult struct {
	Address   string `json:"address"`
	ComputeID string `json:"compute_id"`
	ProjectID string `json:"project_id"`
	TenantID  string `json:"tenant_id,omitempty"`
	// ColdStart is true when this call (or the start it joined) started the compute.
	ColdStart bool `json:"cold_start"`
	// MaxClients is how many client connections the compute takes, so
	// that its own connection limit always leaves the daemon room; 0 when
	// the driver does not say.
	MaxClients int `json:"max_clients,omitempty"`

	memory int64 // the compute's memory, for the node's budget
}

// Activity is a compute's live usage: open proxied connections, bytes
// through the proxy and the last time traffic was seen. The proxy updates
// it per connection and per copy, never per byte; the idle scheduler reads it.
// All fields are atomics, so readers never block the proxy.
type Activity struct {
	conns      atomic.Int64
	pinned     atomic.Int64 // sessions holding state that cannot move (a transaction, locks)
	bytesIn    atomic.Int64 // client -> backend
	bytesOut   atomic.Int64 // backend -> client
	lastActive atomic.Int64 // unix nanoseconds
	storageB   atomic.Int64 // the storage last measured, in bytes
	// Totals already reported in a usage sample, for TakeDelta.
	sampledIn, sampledOut atomic.Int64
	// bytesIn at the last ClientSentSinceLastCall and StorageMayHaveGrown.
	pulledIn, storageIn atomic.Int64
	// bytesIn and the time (unix ns) at a usage sample's last measure.
	measuredIn, measuredAt atomic.Int64
	storage                storageState
}

// measureDue reports whether a usage sample must measure the storage
// (see SampleActive).
func (a *Activity) measureDue(now time.Time) bool {
	at := a.measuredAt.Load()
	return at == 0 || a.measuredIn.Load() != a.bytesIn.Load() || now.UnixNano()-at >= int64(remeasureAfter)
}

// measure measures the storage with walk and keeps the size, with the
// traffic it covers (read before the walk: bytes sent during it count
// for the next one). The usage samples and the storage-limit checks both
// measure through it, so that neither walks again what the other just
// walked.
func (a *Activity) measure(walk func() (int64, error)) (int64, error) {
	in, at := a.bytesIn.Load(), time.Now().UnixNano()
	size, err := walk()
	if err != nil {
		return 0, err
	}
	a.storageB.Store(size)
	a.measuredIn.Store(in)
	a.measuredAt.Store(at)
	return size, nil
}

// measureNext makes the next usage sample measure the storage: after a
// start, the data may not be what the last measure saw.
func (a *Activity) measureNext() { a.measuredAt.Store(0) }

// ClientSentSinceLastCall reports whether clients sent anything since the
// previous call: only then can SQL have changed the compute's users.
func (a *Activity) ClientSentSinceLastCall() bool {
	cur := a.bytesIn.Load()
	return a.pulledIn.Swap(cur) != cur
}

// StorageMayHaveGrown reports whether the compute's storage needs a look:
// clients sent something since the previous call, a connection is open
// (one statement can write for long without a byte from its client), or
// the compute is read-only.
func (a *Activity) StorageMayHaveGrown() bool {
	cur := a.bytesIn.Load()
	return a.storageIn.Swap(cur) != cur || a.Conns() > 0 || a.StorageFull()
}

// StartStorageCheck claims the compute's storage check; false when one is
// under way. EndStorageCheck releases it.
func (a *Activity) StartStorageCheck() bool { return a.storage.checking.CompareAndSwap(false, true) }

// EndStorageCheck ends the check StartStorageCheck claimed.
func (a *Activity) EndStorageCheck() { a.storage.checking.Store(false) }

// TakeDelta returns the bytes moved since the previous call, for usage
// samples.
func (a *Activity) TakeDelta() (in, out int64) {
	curIn, curOut := a.Bytes()
	return curIn - a.sampledIn.Swap(curIn), curOut - a.sampledOut.Swap(curOut)
}

// Lease is one proxied connection's hold on a compute's Activity. Release it
// exactly once when the connection ends.
type Lease struct {
	a        *Activity
	released atomic.Bool
}

// Acquire opens a lease for one connection.
func (a *Activity) Acquire() *Lease {
	a.conns.Add(1)
	a.Touch()
	return &Lease{a: a}
}

// StorageBytes is the storage last measured (0 before the first).
func (a *Activity) StorageBytes() int64 { return a.storageB.Load() }

// Touch records traffic now.
func (a *Activity) Touch() { a.lastActive.Store(time.Now().UnixNano()) }

// Pin adds delta to the sessions pinned to the compute: while any is, the
// compute is not idle.
func (a *Activity) Pin(delta int64) {
	a.pinned.Add(delta)
	a.Touch()
}

// Pinned is the number of sessions pinned to the compute.
func (a *Activity) Pinned() int64 { return a.pinned.Load() }

// Conns is the number of open proxied connections.
func (a *Activity) Conns() int64 { return a.conns.Load() }

// Bytes returns the bytes proxied client->backend and backend->client.
func (a *Activity) Bytes() (in, out int64) { return a.bytesIn.Load(), a.bytesOut.Load() }

// LastActive is the last time traffic was seen (zero if never).
func (a *Activity) LastActive() time.Time {
	n := a.lastActive.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Add records bytes moved in each direction and marks the compute active.
func (l *Lease) Add(in, out int64) {
	if in != 0 {
		l.a.bytesIn.Add(in)
	}
	if out != 0 {
		l.a.bytesOut.Add(out)
	}
	l.a.Touch()
}

// Release ends the lease. Calling it twice is harmless.
func (l *Lease) Release() {
	if l.released.CompareAndSwap(false, true) {
		l.a.conns.Add(-1)
		l.a.Touch()
	}
}
