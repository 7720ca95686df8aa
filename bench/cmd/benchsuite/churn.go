package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// ChurnResult: projects with a short idle timeout cycling suspend -> login
// -> query -> idle suspend under steady client load.
type ChurnResult struct {
	Projects      int
	Duration      time.Duration
	IdleTimeout   int // seconds
	Interval      time.Duration
	Logins        int
	FailedLogins  int
	FailedQueries int
	RowsLost      int // committed rows missing at the end (must be 0)
	Starts        int // wake starts: one per completed cycle
	IdleSuspends  int
	Login         bench.Latency // every successful login (warm and cold mixed)
	ColdLogin     bench.Latency // logins slower than 20 ms: those that waited for a start
	ErrorKind     []string
	Create        bench.Latency // POST project + POST compute, through the API
}

// churnIdle is the projects' idle timeout (seconds) in the churn run: short,
// so that each project cycles about every 3 s.
const churnIdle = 2

// churnAndScale runs the churn on a fresh daemon, then restarts it on the
// same data dir with scaleN projects and scaleActive computes active for the
// scale figures.
func (s *suite) churnAndScale() error {
	dir := filepath.Join(s.opts.workDir, "d2")
	d, err := startDaemon(s.bin, dir, s.opts.interval)
	if err != nil {
		return err
	}
	defer func() { d.stop() }()
	projects, err := s.churnProjects(d)
	if err != nil {
		return err
	}
	if s.want("churn") {
		if err := s.churn(d, projects); err != nil {
			return err
		}
	}
	if !s.want("scale") {
		return nil
	}
	return s.scale(d, projects, dir)
}

// churnProjects creates the projects with computes, four at a time, timing
// each project + compute creation through the API.
func (s *suite) churnProjects(d *daemon) ([]*project, error) {
	n := max(s.opts.churnN, s.opts.scaleActive)
	projects := make([]*project, n)
	created := make([]time.Duration, n)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error {
			t0 := time.Now()
			p, err := d.createProject(fmt.Sprintf("churn%02d", i), churnIdle)
			if err != nil {
				return err
			}
			if err := d.createCompute(p, ""); err != nil {
				return err
			}
			created[i] = time.Since(t0)
			projects[i] = p
			db, err := sql.Open("mysql", d.proxyDSN(p, ""))
			if err != nil {
				return err
			}
			defer db.Close()
			for _, q := range []string{"CREATE DATABASE churn", "CREATE TABLE churn.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"} {
				if _, err := db.Exec(q); err != nil {
					return fmt.Errorf("%s on %s: %w", q, p.Name, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	s.res.Churn = &ChurnResult{Create: bench.Summarize(created)}
	return projects, nil
}

// churn runs one client per project for churnFor. Each loop logs in, inserts
// a row, reads the count back, disconnects, and sleeps a random 0.5-3.5 s:
// around the 2 s idle timeout, so logins land on running computes, on
// computes being suspended, and on suspended ones. At the end every row
// committed must still be there.
func (s *suite) churn(d *daemon, projects []*project) error {
	projects = projects[:s.opts.churnN]
	res := s.res.Churn
	res.Projects, res.Duration, res.IdleTimeout, res.Interval = len(projects), s.opts.churnFor, churnIdle, s.opts.interval
	// Start from suspended computes, as idle projects are.
	for _, p := range projects {
		if err := d.waitState(p, "suspended", 30*time.Second); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	var logins []time.Duration
	kinds := map[string]int{}
	inserted := make([]int, len(projects))
	since := time.Now()
	stopAt := since.Add(s.opts.churnFor)
	var wg sync.WaitGroup
	for i, p := range projects {
		conn, err := bench.Connector(d.proxyDSN(p, "churn"))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for time.Now().Before(stopAt) {
				lat, ok, err := churnOnce(conn)
				mu.Lock()
				switch {
				case err != nil && !ok:
					res.FailedLogins++
					kinds["login: "+err.Error()]++
				case err != nil:
					res.FailedQueries++
					kinds["query: "+err.Error()]++
				default:
					inserted[i]++
				}
				if ok {
					logins = append(logins, lat)
				}
				res.Logins++
				mu.Unlock()
				time.Sleep(time.Duration(500+rng.IntN(3000)) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	res.Login = bench.Summarize(logins)
	var cold []time.Duration
	for _, l := range logins {
		if l > 20*time.Millisecond {
			cold = append(cold, l)
		}
	}
	res.ColdLogin = bench.Summarize(cold)
	for i, p := range projects {
		starts, idle, err := d.startsAndSuspends(p, since, end)
		if err != nil {
			return err
		}
		res.Starts += starts
		res.IdleSuspends += idle
		// Every committed row must have survived the suspends.
		db, err := sql.Open("mysql", d.proxyDSN(p, "churn"))
		if err != nil {
			return err
		}
		var n int
		err = db.QueryRow("SELECT COUNT(*) FROM t").Scan(&n)
		db.Close()
		if err != nil {
			return fmt.Errorf("count rows of %s: %w", p.Name, err)
		}
		if n < inserted[i] {
			res.RowsLost += inserted[i] - n
		}
	}
	for k, v := range kinds {
		res.ErrorKind = append(res.ErrorKind, fmt.Sprintf("%d× %s", v, k))
	}
	sort.Strings(res.ErrorKind)
	log.Printf("churn: %d logins, %d failed logins, %d failed queries, %d cycles (wake starts), %d idle suspends, %d rows lost",
		res.Logins, res.FailedLogins, res.FailedQueries, res.Starts, res.IdleSuspends, res.RowsLost)
	return nil
}

// churnOnce is one client visit. ok reports whether the login succeeded;
// lat is the login's time (connect, including any wake).
func churnOnce(conn driver.Connector) (lat time.Duration, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	c, err := conn.Connect(ctx)
	if err != nil {
		return 0, false, err
	}
	lat = time.Since(t0)
	defer c.Close()
	ex := c.(driver.ExecerContext)
	if _, err := ex.ExecContext(ctx, "INSERT INTO t (v) VALUES (1)", nil); err != nil {
		return lat, true, err
	}
	rows, err := c.(driver.QueryerContext).QueryContext(ctx, "SELECT COUNT(*) FROM t", nil)
	if err != nil {
		return lat, true, err
	}
	dest := make([]driver.Value, 1)
	err = rows.Next(dest)
	rows.Close()
	return lat, true, err
}

// maxConnections reads @@max_connections through conn (0 on error).
func maxConnections(conn driver.Connector) int {
	db := sql.OpenDB(conn)
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT @@max_connections").Scan(&n); err != nil {
		return 0
	}
	return n
}
