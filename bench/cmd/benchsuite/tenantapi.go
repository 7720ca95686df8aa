package main

import (
	"fmt"
	"log"
	"math/rand/v2"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// TenantAPIResult: the API's latency through a tenant-scoped API key, next
// to the admin path, on a store holding many tenants' projects. A tenant
// key is checked (a hash lookup) on every request and its lists are
// filtered in the store's query, so this is what a tenant's tooling sees.
type TenantAPIResult struct {
	Tenants, Projects int
	PerTenant         int
	Requests          int           // per kind of request
	Create            bench.Latency // POST /api/v1/projects while filling the store
	// GET /api/v1/projects?limit=100 and GET /api/v1/projects/{id} (ids of
	// the key's tenant's projects), with the tenant key and as an admin.
	KeyList, KeyGet     bench.Latency
	AdminList, AdminGet bench.Latency
}

// tenantAPIWarmup requests of each kind come before the measured ones:
// the connection, the store's caches and the key's first check.
const tenantAPIWarmup = 20

// tenantAPI fills a fresh daemon with tenants and their projects (no
// computes), makes a tenant key for the first tenant, then times list and
// get with that key and as an admin, interleaved.
func (s *suite) tenantAPI() error {
	if s.opts.tenantsN < 1 || s.opts.tenantProjects < s.opts.tenantsN {
		return fmt.Errorf("-tenantapi-tenants %d and -tenantapi-projects %d: need at least one project per tenant", s.opts.tenantsN, s.opts.tenantProjects)
	}
	d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d4"), 0)
	if err != nil {
		return err
	}
	defer d.stopAndReap()
	res := &TenantAPIResult{Tenants: s.opts.tenantsN, Projects: s.opts.tenantProjects,
		PerTenant: s.opts.tenantProjects / s.opts.tenantsN, Requests: s.opts.tenantRequests}
	tenants, err := tenantAPITenants(d, res.Tenants)
	if err != nil {
		return err
	}
	log.Printf("tenantapi: %d tenants; creating %d projects, 4 at a time", res.Tenants, res.Projects)
	ids, err := tenantAPIProjects(d, tenants, res)
	if err != nil {
		return err
	}
	var key struct{ Key string }
	if err := d.call("POST", "/api/v1/tenants/"+tenants[0]+"/api_keys", map[string]any{"name": "bench", "scope": "tenant"}, &key); err != nil {
		return fmt.Errorf("create a tenant API key: %w", err)
	}
	// The key must see its tenant's projects and only those.
	var list struct{ Projects []struct{ ID string } }
	if err := d.callAs(key.Key, "GET", "/api/v1/projects?limit=1000", nil, &list); err != nil {
		return fmt.Errorf("list projects with the tenant key: %w", err)
	}
	if len(list.Projects) != len(ids) {
		return fmt.Errorf("the tenant key lists %d projects, its tenant has %d", len(list.Projects), len(ids))
	}
	if err := s.tenantAPITimes(d, key.Key, ids, res); err != nil {
		return err
	}
	s.res.TenantAPI = res
	log.Printf("tenantapi: tenant key list p50 %.2f p99 %.2f ms, get p50 %.2f p99 %.2f ms; admin list p99 %.2f ms, get p99 %.2f ms",
		res.KeyList.P50, res.KeyList.P99, res.KeyGet.P50, res.KeyGet.P99, res.AdminList.P99, res.AdminGet.P99)
	return nil
}

// tenantAPITenants creates n tenants and returns their ids.
func tenantAPITenants(d *daemon, n int) ([]string, error) {
	ids := make([]string, n)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range n {
		g.Go(func() (err error) {
			ids[i], err = d.createTenant(fmt.Sprintf("tenant%03d", i))
			return err
		})
	}
	return ids, g.Wait()
}

// tenantAPIProjects creates the projects, four at a time, PerTenant to each
// tenant in turn, timing each create; it returns the first tenant's
// project ids.
func tenantAPIProjects(d *daemon, tenants []string, res *TenantAPIResult) ([]string, error) {
	times := make([]time.Duration, res.Projects)
	first := make([]string, res.PerTenant)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range res.Projects {
		t := min(i/res.PerTenant, len(tenants)-1)
		g.Go(func() error {
			t0 := time.Now()
			p, err := d.createProjectIn(tenants[t], fmt.Sprintf("p%05d", i), 300)
			times[i] = time.Since(t0)
			if err == nil && t == 0 {
				first[i] = p.ID
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.Create = bench.Summarize(times)
	return first, nil
}

// tenantAPITimes sends the four kinds of request in turn, rotating which
// goes first, so that drift on the machine hits all four alike. The gets
// of one round ask for the same project.
func (s *suite) tenantAPITimes(d *daemon, key string, ids []string, res *TenantAPIResult) error {
	const list = "/api/v1/projects?limit=100"
	rng := rand.New(rand.NewPCG(3, 4))
	lat := make([][]time.Duration, 4)
	for i := range tenantAPIWarmup + res.Requests {
		get := "/api/v1/projects/" + ids[rng.IntN(len(ids))]
		reqs := []struct{ path, key string }{{list, key}, {get, key}, {list, ""}, {get, ""}}
		for k := range reqs {
			j := (k + i) % len(reqs)
			el, err := d.getAs(reqs[j].path, reqs[j].key)
			if err != nil {
				return fmt.Errorf("request %d (tenant key: %t): %w", i, reqs[j].key != "", err)
			}
			if i >= tenantAPIWarmup {
				lat[j] = append(lat[j], el)
			}
		}
	}
	res.KeyList, res.KeyGet = bench.Summarize(lat[0]), bench.Summarize(lat[1])
	res.AdminList, res.AdminGet = bench.Summarize(lat[2]), bench.Summarize(lat[3])
	return nil
}
