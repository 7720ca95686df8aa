package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/serverlessd/serverlessd/bench"
)

// ReattachResult: the first query on an open, idle connection after its
// compute was suspended, beside a bare mariadbd's start-to-ready on a copy
// of the same compute.
type ReattachResult struct {
	Cycles  int
	Errors  int
	Query   bench.Latency // client: SELECT 1 on the open connection, compute suspended
	Floor   bench.Latency // bare mariadbd: exec to a login + SELECT 1 on its socket
	StartOp bench.Latency // the daemon's start operations (operations API), as it timed them
	// Extra is (query - floor) per cycle: what serverlessd adds to
	// mariadbd's own start-up when it also restores a session rather than
	// logging a new client in.
	Extra bench.Latency
	// Cold and Warm are the re-attaches the proxy counted over the timed
	// cycles (/metrics): one cold re-attach per cycle, or the query was not
	// served by re-attaching the session.
	Cold, Warm int
	Dials      int // connections database/sql dialed: 1, or the session was not kept
}

// reattach measures the first query on a pooled connection after a
// transparent suspend, interleaved with the floor as the cold login is.
// One connection is opened before the cycles and kept: each cycle suspends
// the project through the API and waits for the suspended state (untimed),
// then times one SELECT 1 on that connection and a bare mariadbd start,
// alternating which goes first.
func (s *suite) reattach(d *daemon) error {
	p, floor, err := s.suspendedWithFloor(d, "reattach", "floor-reattach")
	if err != nil {
		return err
	}
	defer onInterrupt(func() { _ = floor.Stop() })()
	conn, db, dials, err := openOne(d.proxyDSN(p, ""))
	if err != nil {
		return err
	}
	defer db.Close()
	defer conn.Close()
	query := func() (time.Duration, error) {
		ctx, cancel := withTimeout(time.Minute)
		defer cancel()
		var one int
		t0 := time.Now()
		err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one)
		return time.Since(t0), err
	}
	floorStart := floorStarter(floor, p.Password)
	// One untimed round warms the page cache for both, and is the
	// connection's first re-attach.
	if err := d.suspend(p); err != nil {
		return err
	}
	if _, err := query(); err != nil {
		return fmt.Errorf("first re-attach: %w", err)
	}
	if _, err := floorStart(); err != nil {
		return fmt.Errorf("bare mariadbd: %w", err)
	}
	m0, err := d.metrics()
	if err != nil {
		return err
	}
	res := &ReattachResult{Cycles: s.opts.reattachCycles}
	var queries, floors, extra []time.Duration
	since := time.Now()
	for i := range s.opts.reattachCycles {
		if err := d.suspend(p); err != nil {
			return err
		}
		if err := d.waitState(p, "suspended", 30*time.Second); err != nil {
			return err
		}
		var q, f time.Duration
		var qerr, ferr error
		if i%2 == 0 {
			q, qerr = query()
			f, ferr = floorStart()
		} else {
			f, ferr = floorStart()
			q, qerr = query()
		}
		if ferr != nil {
			return fmt.Errorf("bare mariadbd: %w", ferr)
		}
		floors = append(floors, f)
		if qerr != nil {
			res.Errors++
			log.Printf("re-attach %d: %v", i, qerr)
			continue
		}
		queries = append(queries, q)
		extra = append(extra, q-f)
	}
	res.Query, res.Floor, res.Extra = bench.Summarize(queries), bench.Summarize(floors), bench.Summarize(extra)
	if res.StartOp, err = wakeStarts(d, p, since); err != nil {
		return err
	}
	m1, err := d.metrics()
	if err != nil {
		return err
	}
	res.Cold = int(m1[sessionEvent("reattach_cold")] - m0[sessionEvent("reattach_cold")])
	res.Warm = int(m1[sessionEvent("reattach_warm")] - m0[sessionEvent("reattach_warm")])
	res.Dials = int(dials.Load())
	s.res.Reattach = res
	log.Printf("re-attach p50 %.1f p99 %.1f ms; bare mariadbd p50 %.1f p99 %.1f ms; difference p50 %.1f p99 %.1f ms; %d cold and %d warm re-attaches, %d dials, errors %d",
		res.Query.P50, res.Query.P99, res.Floor.P50, res.Floor.P99, res.Extra.P50, res.Extra.P99, res.Cold, res.Warm, res.Dials, res.Errors)
	if res.Errors > 0 {
		return fmt.Errorf("%d of %d queries after a suspend failed", res.Errors, res.Cycles)
	}
	return nil
}

// openOne opens a database/sql handle on dsn and takes one connection out
// of it, to be kept; dials counts the connections the handle opens.
func openOne(dsn string) (*sql.Conn, *sql.DB, *atomic.Int64, error) {
	c, err := bench.Connector(dsn)
	if err != nil {
		return nil, nil, nil, err
	}
	cc := &countingConnector{Connector: c}
	db := sql.OpenDB(cc)
	ctx, cancel := withTimeout(time.Minute)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return conn, db, &cc.dials, nil
}

// countingConnector counts the connections database/sql opens through it.
// database/sql dials again, silently, when the driver reports a pooled
// connection dead, so the count tells a kept session from a new login.
type countingConnector struct {
	driver.Connector
	dials atomic.Int64
}

func (c *countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c.dials.Add(1)
	return c.Connector.Connect(ctx)
}
