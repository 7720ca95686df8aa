package main

import (
	"fmt"
	"log"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/serverlessd/serverlessd/bench"
)

// StormRound is one wake storm: many concurrent logins to one suspended
// project.
type StormRound struct {
	Clients int
	Errors  int
	Starts  int           // start operations the API shows for the round
	Login   bench.Latency // each client's connect + SELECT 1
	Wall    float64       // ms from the first login to the last answer
}

// StormResult is every round, plus the distinct errors seen.
type StormResult struct {
	Memory    string
	MaxConns  int // the compute's max_connections
	Rounds    []StormRound
	All       bench.Latency // over every login of every round
	Errors    int
	MaxStarts int
	ErrorKind []string
}

// stormMemories are the compute sizes storms run against: the default,
// which is what the target is about, and one whose mariadbd accepts more
// connections than there are clients, which tells a limit of the backend's
// max_connections from one of serverlessd.
var stormMemories = []string{"", "2Gi"}

// storm runs the wake storms against a project of each size.
func (s *suite) storm(d *daemon) error {
	for i, mem := range stormMemories {
		res, err := s.stormOne(d, fmt.Sprintf("storm%d", i), mem)
		if err != nil {
			return err
		}
		s.res.Storms = append(s.res.Storms, res)
	}
	return nil
}

// stormOne suspends a project, then releases the clients together: each
// opens its own connection, runs SELECT 1 and closes. Every login must
// succeed, and the compute must start exactly once.
func (s *suite) stormOne(d *daemon, name, memory string) (*StormResult, error) {
	p, err := d.createProject(name, 0)
	if err != nil {
		return nil, err
	}
	if err := d.createCompute(p, memory); err != nil {
		return nil, err
	}
	res := &StormResult{Memory: memory}
	if memory == "" {
		res.Memory = "256Mi, the default"
	}
	if db, err := bench.Connector(directDSN(p, "")); err == nil {
		res.MaxConns = maxConnections(db)
	}
	conn, err := bench.Connector(d.proxyDSN(p, ""))
	if err != nil {
		return nil, err
	}
	kinds := map[string]int{}
	var all []time.Duration
	for round := range s.opts.stormRounds {
		if err := d.suspend(p); err != nil {
			return nil, err
		}
		n := s.opts.stormClients
		lat := make([]time.Duration, n)
		errs := make([]error, n)
		var ready, done sync.WaitGroup
		gate := make(chan struct{})
		ready.Add(n)
		done.Add(n)
		for i := range n {
			go func() {
				defer done.Done()
				ctx, cancel := withTimeout(2 * time.Minute)
				defer cancel()
				ready.Done()
				<-gate
				t0 := time.Now()
				errs[i] = bench.Select1(ctx, conn)
				lat[i] = time.Since(t0)
			}()
		}
		ready.Wait()
		since := time.Now()
		close(gate)
		done.Wait()
		wall := time.Since(since)
		r := StormRound{Clients: n, Wall: bench.Ms(wall)}
		ok, failed := tally(errs, lat, kinds)
		r.Errors = failed
		r.Login = bench.Summarize(ok)
		all = append(all, ok...)
		ops, err := d.operations(p, since.Add(-time.Millisecond))
		if err != nil {
			return nil, err
		}
		r.Starts = countOps(ops, "start", "")
		res.Rounds = append(res.Rounds, r)
		res.Errors += r.Errors
		res.MaxStarts = max(res.MaxStarts, r.Starts)
		log.Printf("storm %d (%s): %d logins, %d errors, %d starts, p50 %.0f p99 %.0f ms", round+1, res.Memory, n, r.Errors, r.Starts, r.Login.P50, r.Login.P99)
	}
	res.All = bench.Summarize(all)
	for k, v := range kinds {
		res.ErrorKind = append(res.ErrorKind, fmt.Sprintf("%d× %s", v, k))
	}
	sort.Strings(res.ErrorKind)
	if len(res.ErrorKind) > 5 {
		res.ErrorKind = res.ErrorKind[:5]
	}
	return res, nil
}

// socketPath matches a compute's socket path in an error message, so that
// the same error from different runs reads the same.
var socketPath = regexp.MustCompile(`/\S*mysqld\.sock`)

// tally splits logins into the latencies of those that worked and a count
// of those that failed, counting each failure's message in kinds (compute
// socket paths made alike).
func tally(errs []error, lat []time.Duration, kinds map[string]int) (ok []time.Duration, failed int) {
	for i, err := range errs {
		if err != nil {
			failed++
			kinds[socketPath.ReplaceAllString(err.Error(), "<compute socket>")]++
			continue
		}
		ok = append(ok, lat[i])
	}
	return ok, failed
}
