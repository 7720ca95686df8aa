package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Transaction pooling: a session of a project in pool mode "transaction"
// borrows a backend connection (a link) from its compute's pool for each
// transaction, or each statement in autocommit, and gives it back at the
// boundary unless something pins it there. A link given back stays
// parked with its session, so that the session's next command finds its
// connection as it left it (ROW_COUNT(), FOUND_ROWS(), warnings), until
// another session needs it: a waiter takes a parked link from a session
// between commands, which then borrows again at its next command.
//
// Pooled sessions that an event loop relays all use the loop of their
// compute's pool, so that the loop can hand links among them without
// locks of their own: a link parked with a session in that loop
// (link.inLoop) is reclaimed on that loop's thread only, and the other
// goroutines ask the loop to serve their waiters (queueLoopServe).
//
// Invariants, all under backendPool.mu:
//   - open counts the links of the pool that exist: in use, parked, idle,
//     and slots granted to a session that is logging in. open <= size.
//   - a link is in idle or in parked or in use by one session, never two.
//   - a waiter is granted a link or a slot exactly once, and the grant is
//     either taken by the waiter or handed back (timeout).
//   - loopParked counts the parked links with inLoop set; a link given to
//     a waiter is watched by no event loop.

// PoolSettings are a project's pooling settings.
type PoolSettings struct {
	// Transaction turns transaction pooling on; off, each session holds
	// one backend connection while attached.
	Transaction bool
	// Size bounds the backend connections of the project's compute that
	// its pooled sessions use; 0 is the default share of the compute's
	// connections.
	Size int
	// Wait bounds how long a session waits for a backend connection when
	// all are busy; 0 is the default.
	Wait time.Duration
}

// ProjectPooling is an optional Directory method: a project's pooling
// settings, read at each login.
type ProjectPooling interface {
	ProjectPooling(ctx context.Context, projectID string) (PoolSettings, error)
}

// Defaults of PoolSettings.
const (
	defaultPoolWait = 30 * time.Second
	// defaultPoolShare is the share of a compute's client connections a
	// pool takes by default: the rest stays for session-mode logins.
	defaultPoolShare = 2
	defaultPoolSize  = 20 // when the compute's connection count is unknown
	// poolIdleClose closes a free link unused this long.
	poolIdleClose = time.Minute
	// rowCountGrace is how long a link stays parked with a session whose
	// last statement changed rows, even while others wait: long enough
	// for the ROW_COUNT() that follows such a statement.
	rowCountGrace = 100 * time.Millisecond
)

// errPoolTimeout: no backend connection freed up within the wait.
var errPoolTimeout = errors.New("no backend connection became free in time")

// errPoolDropped: the pool was dropped before the borrow took its lock.
var errPoolDropped = errors.New("backend pool dropped")

// poolSize is the pool size a project's settings give a compute that
// takes maxClients client connections.
func poolSize(set PoolSettings, maxClients int) int {
	if set.Size > 0 {
		if maxClients > 0 {
			return min(set.Size, maxClients)
		}
		return set.Size
	}
	if maxClients > 0 {
		return max(maxClients/defaultPoolShare, 1)
	}
	return defaultPoolSize
}

// backendPool is the pool of one compute's backend connections.
type backendPool struct {
	computeID string

	mu      sync.Mutex
	size    int
	open    int
	idle    []*link            // free links, most recently used last
	parked  map[*link]*session // links parked with their idle sessions
	waiters []*poolWaiter      // FIFO
	stats   poolStats
	swept   time.Time // when free links were last checked for poolIdleClose
	// regrantAt is when a timer serves the waiters again (a sticky link
	// becomes free to reclaim); zero when none is set.
	regrantAt time.Time
	// dropped: pools no longer holds it (its compute stopped); a borrow
	// that found it before then gets the compute's pool anew.
	dropped bool
	// loop relays the pool's sessions that event loops relay (nil: none
	// do); loopParked and loopServe are its parked links and whether a
	// serve of the waiters is queued on it.
	loop       poolLoop
	loopParked int
	loopServe  bool
	// onLoopNow: the loop's own thread holds mu (grants to its waiters
	// need no wake-up).
	onLoopNow bool
}

// poolStats are a pool's counters, read for metrics.
type poolStats struct {
	waits, timeouts, reclaims int64
}

// grant is what a borrower gets: a link to use (it may need a reset or
// another login), or a slot to open a new one (link nil). from is the
// idle session the link was taken from when its LAST_INSERT_ID() is still
// to be read on it: that session's bmu stays held until the borrower
// has read it.
type grant struct {
	l    *link
	from *session
}

type poolWaiter struct {
	key string
	ch  chan grant // buffered: a grant never blocks the granter
	// fn takes the grant instead of ch for a session in an event loop;
	// it runs under the pool's lock and must not block.
	fn func(grant)
}

// pools holds the server's backend pools, by compute.
type pools struct {
	mu    sync.Mutex
	m     map[string]*backendPool
	loops *loopGroup // nil: no event loops
}

// get returns computeID's pool, made with size the first time; a later
// size (the project's settings changed) applies from then on.
func (ps *pools) get(computeID string, size int) *backendPool {
	ps.mu.Lock()
	p := ps.m[computeID]
	if p == nil {
		if ps.m == nil {
			ps.m = map[string]*backendPool{}
		}
		p = &backendPool{computeID: computeID, size: size, parked: map[*link]*session{}, loop: ps.loopFor(computeID)}
		ps.m[computeID] = p
		ps.mu.Unlock()
		return p
	}
	ps.mu.Unlock()
	p.mu.Lock()
	if p.size != size {
		p.size = size
		p.grantLocked() // a larger pool lets waiters open links
	}
	p.mu.Unlock()
	return p
}

// lookup returns computeID's pool, or nil.
func (ps *pools) lookup(computeID string) *backendPool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.m[computeID]
}

// dropEmpty forgets p if it has no link and no waiter: a stopped
// compute's pool, which a later borrow makes anew.
func (ps *pools) dropEmpty(p *backendPool) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open != 0 || len(p.waiters) != 0 || ps.m[p.computeID] != p {
		return false
	}
	delete(ps.m, p.computeID)
	p.dropped = true
	return true
}

// all lists the pools.
func (ps *pools) all() []*backendPool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*backendPool, 0, len(ps.m))
	for _, p := range ps.m {
		out = append(out, p)
	}
	return out
}

// borrow gets ss a link or a slot, in this order: a free link of the
// same key (the same client capabilities), a new slot, a link parked
// with an idle session, else it waits its turn until wait ends.
func (p *backendPool) borrow(ctx context.Context, ss *session, key string, wait time.Duration) (grant, error) {
	g, waited, err := p.borrowWait(ctx, ss, key, wait)
	if waited > 0 && ss.s.cfg.OnPoolWait != nil {
		ss.s.cfg.OnPoolWait(p.computeID, waited)
	}
	return g, err
}

// borrowWait is borrow, also returning how long it waited.
func (p *backendPool) borrowWait(ctx context.Context, ss *session, key string, wait time.Duration) (grant, time.Duration, error) {
	p.sweep()
	p.mu.Lock()
	if p.dropped {
		p.mu.Unlock()
		return grant{}, 0, errPoolDropped
	}
	if g, ok := p.takeLocked(key, ss, false); ok {
		p.mu.Unlock()
		return g, 0, nil
	}
	w := &poolWaiter{key: key, ch: make(chan grant, 1)}
	p.enqueueLocked(w)
	p.mu.Unlock()
	t0 := time.Now()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case g := <-w.ch:
		return g, time.Since(t0), nil
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dropWaiterLocked(w) {
		return <-w.ch, time.Since(t0), nil // granted as the wait ended
	}
	p.stats.timeouts++
	if err := ctx.Err(); err != nil {
		return grant{}, time.Since(t0), err
	}
	return grant{}, time.Since(t0), errPoolTimeout
}

// enqueueLocked adds w to the wait queue. Links parked in the pool's
// event loop can be reclaimed there only: the loop is asked to.
func (p *backendPool) enqueueLocked(w *poolWaiter) {
	p.waiters = append(p.waiters, w)
	p.stats.waits++
	p.regrantAfterStickyLocked()
	if w.fn == nil && p.loopParked > 0 {
		p.queueLoopServe()
	}
}

// tryBorrowLoop is borrow for a session in the pool's event loop, which
// must not block: it gets a link or a slot at once, or a place in the
// queue, whose grant goes to fn.
func (p *backendPool) tryBorrowLoop(ss *session, key string, fn func(grant)) (grant, *poolWaiter, error) {
	p.sweep()
	defer p.lockOnLoop()()
	if p.dropped {
		return grant{}, nil, errPoolDropped
	}
	if g, ok := p.takeLocked(key, ss, true); ok {
		return g, nil, nil
	}
	w := &poolWaiter{key: key, fn: fn}
	p.enqueueLocked(w)
	return grant{}, w, nil
}

// cancelWait takes w out of the queue at its timeout; false when it was
// granted meanwhile (the grant is on its way to w.fn).
func (p *backendPool) cancelWait(w *poolWaiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dropWaiterLocked(w) {
		return false
	}
	p.stats.timeouts++
	return true
}

// returnGrant gives back a grant its borrower no longer wants (it left,
// or its compute changed).
func (p *backendPool) returnGrant(g grant) {
	switch l := g.l; {
	case l == nil:
		p.closed(nil)
	case l.dead || l.toConn() != nil:
		l.discard()
	default:
		p.giveBack(l)
	}
}

// queueLoopServe asks the pool's event loop to serve the waiters with
// the links parked there, once.
func (p *backendPool) queueLoopServe() {
	if p.loopServe {
		return
	}
	p.loopServe = p.doOnLoop(func() {
		defer p.lockOnLoop()()
		p.loopServe = false
		p.grantOn(true)
	})
}

// lockOnLoop takes mu on the pool's own event loop, and returns what
// releases it.
func (p *backendPool) lockOnLoop() (unlock func()) {
	p.mu.Lock()
	p.onLoopNow = true
	return func() {
		p.onLoopNow = false
		p.mu.Unlock()
	}
}

// takeLocked finds a link or a slot at once, without waiting. onLoop
// says the caller runs on the pool's event loop, which alone may reclaim
// the links parked there.
func (p *backendPool) takeLocked(key string, ss *session, onLoop bool) (grant, bool) {
	if l := p.idleLocked(key, ss); l != nil {
		return grant{l: l}, true
	}
	if p.open < p.size {
		p.open++
		return grant{}, true
	}
	if l, from := p.reclaimLocked(key, onLoop); l != nil {
		return grant{l: l, from: from}, true
	}
	if len(p.idle) > 0 {
		// Only links of other capabilities are free: the borrower closes
		// one and opens its own in its place.
		l := p.idle[0]
		p.idle = p.idle[1:]
		return grant{l: l}, true
	}
	return grant{}, false
}

// idleLocked takes the free link of key that ss used last, else the most
// recently used one of key.
func (p *backendPool) idleLocked(key string, ss *session) *link {
	at := -1
	for i := len(p.idle) - 1; i >= 0; i-- {
		l := p.idle[i]
		if l.key != key {
			continue
		}
		if l.owner == ss {
			at = i
			break
		}
		if at < 0 {
			at = i
		}
	}
	if at < 0 {
		return nil
	}
	l := p.idle[at]
	p.idle = append(p.idle[:at], p.idle[at+1:]...)
	return l
}

// reclaimLocked takes a parked link from a session between two commands,
// preferring one of key, then the longest parked. The session's
// goroutine waits for a command without holding its bmu, so TryLock
// succeeds just when the session is idle; it finds its link gone at its
// next command. A session whose bmu is held is starting a command on its
// link and is skipped. A session in the pool's event loop is idle while
// its link is parked (a command unparks it first), and only that loop,
// onLoop, touches it.
func (p *backendPool) reclaimLocked(key string, onLoop bool) (*link, *session) {
	if len(p.parked) == 0 {
		return nil, nil
	}
	cands := make([]*link, 0, len(p.parked))
	for l := range p.parked {
		cands = append(cands, l)
	}
	slices.SortFunc(cands, func(a, b *link) int {
		if (a.key == key) != (b.key == key) {
			if a.key == key {
				return -1
			}
			return 1
		}
		return a.lastUsed.Compare(b.lastUsed)
	})
	now := time.Now()
	for _, l := range cands {
		ss := p.parked[l]
		if now.Before(l.sticky) {
			continue
		}
		if l.inLoop {
			if !onLoop {
				continue
			}
			sig := ss.stateSig()
			if ss.releaseLoopLink() {
				p.unparkLocked(l)
				l.sig, l.lastInsertID = sig, ss.st.lastInsertID
				p.stats.reclaims++
				return l, nil
			}
			continue
		}
		if !ss.bmu.TryLock() {
			continue
		}
		if onLoop && ss.st.insertDirty {
			ss.bmu.Unlock() // reading it would block the loop
			continue
		}
		sig := ss.stateSig() // ss is idle: its bmu is ours
		if ss.link == l && ss.takeOpenLink() == nil {
			// Closed (a KILL, a shutdown): its link's socket may be too.
			// The session's end discards it.
			ss.bmu.Unlock()
			continue
		}
		p.unparkLocked(l)
		l.sig = sig
		p.stats.reclaims++
		if ss.st.insertDirty {
			return l, ss // the borrower reads it, then unlocks
		}
		l.lastInsertID = ss.st.lastInsertID
		ss.bmu.Unlock()
		return l, nil
	}
	return nil, nil
}

// park leaves l with its idle session ss, to be reclaimed if needed. A
// waiter gets it at once instead, once ss's LAST_INSERT_ID() is known:
// mustRead asks ss to read it and park again. kept reports whether ss
// keeps the link.
func (p *backendPool) park(ss *session, l *link) (kept, mustRead bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 && l.sticky.IsZero() {
		if ss.st.insertDirty {
			return false, true
		}
		l.sig, l.lastInsertID = ss.stateSig(), ss.st.lastInsertID
		p.unparkLocked(l) // parked before this command: no longer ss's
		p.handOverLocked(l)
		return false, false
	}
	p.parked[l] = ss
	p.regrantAfterStickyLocked()
	return true, false
}

// parkLoop is park for a session in the pool's event loop, which has
// read its LAST_INSERT_ID() already. With a waiter, release takes the
// link from the session (false: the session is closed, and keeps it)
// and the waiter gets it.
func (p *backendPool) parkLoop(ss *session, l *link, release func() bool) {
	defer p.lockOnLoop()()
	if len(p.waiters) > 0 && l.sticky.IsZero() {
		sig := ss.stateSig()
		if release() {
			p.unparkLocked(l)
			l.sig, l.lastInsertID = sig, ss.st.lastInsertID
			p.handOverLocked(l)
			return
		}
	}
	p.parked[l] = ss
	if !l.inLoop {
		l.inLoop = true
		p.loopParked++
	}
	p.regrantAfterStickyLocked()
}

// markLoop notes that l, if parked, is parked with a session an event
// loop now relays.
func (p *backendPool) markLoop(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.parked[l]; ok && !l.inLoop {
		l.inLoop = true
		p.loopParked++
		if len(p.waiters) > 0 {
			p.queueLoopServe() // they could not reclaim it a moment ago
		}
	}
}

// unparkLocked takes l out of the parked links.
func (p *backendPool) unparkLocked(l *link) {
	if _, ok := p.parked[l]; !ok {
		return
	}
	delete(p.parked, l)
	if l.inLoop {
		l.inLoop = false
		p.loopParked--
	}
}

// regrantAfterStickyLocked serves the waiters again when the first
// sticky parked link may be reclaimed, if anyone waits.
func (p *backendPool) regrantAfterStickyLocked() {
	if len(p.waiters) == 0 {
		return
	}
	now := time.Now()
	var first time.Time
	for l := range p.parked {
		if l.sticky.After(now) && (first.IsZero() || l.sticky.Before(first)) {
			first = l.sticky
		}
	}
	if first.IsZero() || (p.regrantAt.After(now) && !first.Before(p.regrantAt)) {
		return // none sticky, or a timer comes first
	}
	p.regrantAt = first
	time.AfterFunc(time.Until(first), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.regrantAt = time.Time{}
		p.grantLocked()
		p.regrantAfterStickyLocked()
	})
}

// serveWaiters grants the waiters what is free or reclaimable now.
func (p *backendPool) serveWaiters() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grantLocked()
}

// unpark takes l back for its session's next command. The session holds
// its bmu, so l cannot be reclaimed meanwhile.
func (p *backendPool) unpark(l *link) {
	p.mu.Lock()
	p.unparkLocked(l)
	p.mu.Unlock()
}

// giveBack returns a healthy link nobody holds (its session ended).
func (p *backendPool) giveBack(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unparkLocked(l)
	if p.handOverLocked(l) {
		return
	}
	l.lastUsed = time.Now()
	p.idle = append(p.idle, l)
	p.grantLocked()
}

// closed accounts for a link (or a granted slot) that no longer exists.
func (p *backendPool) closed(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l != nil {
		p.unparkLocked(l)
	}
	p.open--
	p.grantLocked()
}

// handOverLocked gives l to the first waiter of its key, else to the
// first waiter; false when nobody waits.
func (p *backendPool) handOverLocked(l *link) bool {
	if len(p.waiters) == 0 {
		return false
	}
	i := max(slices.IndexFunc(p.waiters, func(w *poolWaiter) bool { return w.key == l.key }), 0)
	w := p.waiters[i]
	p.waiters = slices.Delete(p.waiters, i, i+1)
	w.give(grant{l: l})
	return true
}

// give hands a waiter its grant: a waiter in an event loop takes the
// link as it is, a goroutine needs it as a net.Conn.
func (w *poolWaiter) give(g grant) {
	if w.fn != nil {
		w.fn(g)
		return
	}
	if g.l != nil && g.l.toConn() != nil {
		g.l.dead = true // the borrower opens another in its place
	}
	w.ch <- g
}

// grantLocked serves waiters in order while links or slots are free.
func (p *backendPool) grantLocked() { p.grantOn(false) }

// grantOn is grantLocked; onLoop says it runs on the pool's event loop.
// Waiters left while links are parked in that loop are served there.
func (p *backendPool) grantOn(onLoop bool) {
	for len(p.waiters) > 0 {
		w := p.waiters[0]
		g, ok := p.takeLocked(w.key, nil, onLoop)
		if !ok {
			if !onLoop && p.loopParked > 0 {
				p.queueLoopServe()
			}
			return
		}
		p.waiters = p.waiters[1:]
		w.give(g)
	}
}

// dropWaiterLocked removes w from the queue; false when it was granted.
func (p *backendPool) dropWaiterLocked(w *poolWaiter) bool {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// sweep closes the free links unused for poolIdleClose, at most once in
// that time.
func (p *backendPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	due := now.Sub(p.swept) >= poolIdleClose
	if due {
		p.swept = now
	}
	p.mu.Unlock()
	if due {
		p.closeIdle(now.Add(-poolIdleClose))
	}
}

// closeIdle closes the free links unused since before, or all of them
// (a zero before).
func (p *backendPool) closeIdle(before time.Time) {
	p.mu.Lock()
	var keep, drop []*link
	for _, l := range p.idle {
		if before.IsZero() || l.lastUsed.Before(before) {
			drop = append(drop, l)
		} else {
			keep = append(keep, l)
		}
	}
	p.idle = keep
	p.open -= len(drop)
	p.grantLocked()
	p.mu.Unlock()
	for _, l := range drop {
		l.conn.Close()
		l.closeSock()
	}
}

// PoolStats is one compute's pool, for metrics.
type PoolStats struct {
	ComputeID                         string
	Size, Open, Idle, Parked, Waiting int
	Waits, Timeouts, Reclaims         int64
}

func (p *backendPool) snapshot() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{ComputeID: p.computeID, Size: p.size, Open: p.open, Idle: len(p.idle),
		Parked: len(p.parked), Waiting: len(p.waiters), Waits: p.stats.waits,
		Timeouts: p.stats.timeouts, Reclaims: p.stats.reclaims}
}

// PoolStats lists the backend pools of the computes with pooled sessions.
func (s *Server) PoolStats() []PoolStats {
	var out []PoolStats
	for _, p := range s.pools.all() {
		out = append(out, p.snapshot())
	}
	return out
}
