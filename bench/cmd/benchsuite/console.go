package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/bench"
)

// ConsoleResult is the web console's page loads in a headless Chromium,
// against a daemon whose store holds many projects.
type ConsoleResult struct {
	Projects, Computes, Reps, PageSize int
	// List: from navigation to the projects table holding its first page;
	// Project: to one project's page with its compute, roles and
	// operations drawn. ListAPI is the list's API call alone, for
	// comparison.
	List, Project, ListAPI bench.Latency
	// ListParts and ProjectParts say where a load's time goes (p50s).
	ListParts, ProjectParts LoadParts
}

// LoadParts splits a page load by the page's own timings, each in ms
// from the start of the navigation (the p50 over the loads): the page's
// HTML received, its script run (DOMContentLoaded), its first API call
// sent, its last API reply received, and the page complete.
type LoadParts struct {
	HTML, Script, APIStart, APIEnd, Done float64
}

// Shape of the console phase.
const (
	consoleProjects = 1000
	consoleComputes = 10 // projects that have a compute (creating one takes seconds)
	consoleReps     = 20
	consolePageSize = 100 // the list's page: PAGE_SIZE in console/static/app.js
	consoleLoadGoal = 300 * time.Millisecond
	chromiumBin     = "/usr/bin/chromium"
)

// console fills a daemon's store with consoleProjects projects, then loads
// the console's projects list and a project page consoleReps times each.
func (s *suite) console() error {
	d, err := startDaemon(s.bin, filepath.Join(s.opts.workDir, "d-console"), s.opts.interval)
	if err != nil {
		return err
	}
	defer d.stop()
	var g errgroup.Group
	g.SetLimit(4)
	for i := range consoleProjects {
		g.Go(func() error {
			p, err := d.createProject(fmt.Sprintf("console%04d", i), 300)
			if err == nil && i < consoleComputes {
				err = d.createCompute(p, "128Mi")
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	res := &ConsoleResult{Projects: consoleProjects, Computes: consoleComputes, Reps: consoleReps, PageSize: consolePageSize}
	var api []time.Duration
	for i := range consoleReps + 5 {
		el, err := d.get(fmt.Sprintf("/api/v1/projects?include=compute&limit=%d&after=&name_contains=", consolePageSize+1))
		if err != nil {
			return err
		}
		if i >= 5 {
			api = append(api, el)
		}
	}
	res.ListAPI = bench.Summarize(api)
	ctx, cancel, err := startChromium(s.opts.workDir)
	if err != nil {
		return err
	}
	defer cancel()
	base := "http://" + d.api + "/"
	// The daemon runs without tokens on loopback: an empty key signs in.
	if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem("serverlessd.key", "")`)); err != nil {
		return fmt.Errorf("open the console: %w", err)
	}
	list := fmt.Sprintf(`document.querySelectorAll("#projects tr[data-project]").length === %d && !document.querySelector("#page-next").disabled`, consolePageSize)
	if res.List, res.ListParts, err = pageLoads(ctx, base+"#/", base+"healthz", list); err != nil {
		return fmt.Errorf("projects list: %w", err)
	}
	page := `document.querySelector('#compute-facts dd[data-fact="State"]') && document.querySelector("#roles tr") && document.querySelector("#operations tr")`
	if res.Project, res.ProjectParts, err = pageLoads(ctx, base+"#/projects/console0001", base+"healthz", page); err != nil {
		return fmt.Errorf("project page: %w", err)
	}
	log.Printf("console with %d projects: list p50 %.0f ms, p99 %.0f ms (%s); project page p50 %.0f ms, p99 %.0f ms (%s)",
		consoleProjects, res.List.P50, res.List.P99, res.ListParts, res.Project.P50, res.Project.P99, res.ProjectParts)
	s.res.Console = res
	return nil
}

// startChromium starts Debian's headless Chromium.
func startChromium(workDir string) (context.Context, context.CancelFunc, error) {
	if _, err := os.Stat(chromiumBin); err != nil {
		return nil, nil, fmt.Errorf("the console figures need Debian's chromium (make deps-bench installs it): %w", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumBin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(filepath.Join(workDir, "chromium")), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	cancel := func() { cancelTab(); cancelAlloc() }
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("start %s: %w", chromiumBin, err)
	}
	return ctx, cancel, nil
}

// pageLoads loads url consoleReps times (after two to warm up) and times
// each from the start of the navigation (performance.now()'s origin) to
// the first DOM change after which done holds, as a script that every new
// document runs first records it.
func pageLoads(ctx context.Context, url, away, done string) (bench.Latency, LoadParts, error) {
	script := `(() => {
		const obs = new MutationObserver(() => {
			if (window.doneAt === undefined && (` + done + `)) {
				window.doneAt = performance.now();
				obs.disconnect();
			}
		});
		obs.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
	})();`
	var id page.ScriptIdentifier
	err := chromedp.Do(ctx, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		added, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script})
		if err == nil {
			id = added.Identifier
		}
		return chromedp.Void{}, err
	})
	if err != nil {
		return bench.Latency{}, LoadParts{}, err
	}
	defer chromedp.Do(ctx, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, page.RemoveScriptToEvaluateOnNewDocument, page.RemoveScriptToEvaluateOnNewDocumentParams{Identifier: id})
		return chromedp.Void{}, err
	})
	var lat []time.Duration
	var parts []LoadParts
	for i := range consoleReps + 2 {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		// Through another page of the daemon first: each load is a new
		// document (not a change of the hash) of a site the browser has
		// open already, as when a user comes back to the console.
		err := chromedp.Do(tctx, chromedp.Navigate(away), chromedp.Navigate(url), chromedp.WaitReady("#main"))
		var ms float64
		var lp LoadParts
		if err == nil {
			ms, err = chromedp.Run(tctx, chromedp.Poll[float64](`window.doneAt`, chromedp.WithPollingTimeout(20*time.Second)))
		}
		if err == nil {
			lp, err = chromedp.Run(tctx, chromedp.Evaluate[LoadParts](loadPartsJS))
		}
		cancel()
		if err != nil {
			return bench.Latency{}, LoadParts{}, err
		}
		if i >= 2 {
			lat = append(lat, time.Duration(ms*float64(time.Millisecond)))
			parts = append(parts, lp)
		}
	}
	return bench.Summarize(lat), medianParts(parts), nil
}

// loadPartsJS reads a loaded page's timings (see LoadParts).
const loadPartsJS = `(() => {
	const nav = performance.getEntriesByType("navigation")[0];
	// Only the calls answered before the page was complete: the project
	// page's charts start after it.
	const api = performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname.startsWith("/api/") && e.responseEnd <= window.doneAt);
	return {
		HTML: nav.responseEnd, Script: nav.domContentLoadedEventStart,
		APIStart: Math.min(...api.map((e) => e.startTime)), APIEnd: Math.max(...api.map((e) => e.responseEnd)),
		Done: window.doneAt,
	};
})()`

// medianParts is the p50 of each part over the loads.
func medianParts(ps []LoadParts) LoadParts {
	p50 := func(get func(LoadParts) float64) float64 {
		d := make([]time.Duration, len(ps))
		for i := range ps {
			d[i] = time.Duration(get(ps[i]) * float64(time.Millisecond))
		}
		return bench.Summarize(d).P50
	}
	return LoadParts{
		HTML: p50(func(p LoadParts) float64 { return p.HTML }), Script: p50(func(p LoadParts) float64 { return p.Script }),
		APIStart: p50(func(p LoadParts) float64 { return p.APIStart }), APIEnd: p50(func(p LoadParts) float64 { return p.APIEnd }),
		Done: p50(func(p LoadParts) float64 { return p.Done }),
	}
}

func (p LoadParts) String() string {
	return fmt.Sprintf("p50s: HTML %.0f ms, script run %.0f ms, API from %.0f to %.0f ms, done %.0f ms", p.HTML, p.Script, p.APIStart, p.APIEnd, p.Done)
}

// consoleTarget checks both pages' loads against the goal, at p99.
func consoleTarget(c *ConsoleResult) Target {
	goal := fmt.Sprintf("console pages load under %d ms with %d projects (p99)", consoleLoadGoal.Milliseconds(), consoleProjects)
	if c == nil || c.List.N == 0 {
		return Target{Issue: "19", Goal: goal, Status: notRun}
	}
	limit := float64(consoleLoadGoal.Milliseconds())
	t := Target{Issue: "19", Goal: goal,
		Measured: fmt.Sprintf("projects list p50 %.0f ms, p99 %.0f ms; project page p50 %.0f ms, p99 %.0f ms (%d loads each)",
			c.List.P50, c.List.P99, c.Project.P50, c.Project.P99, c.Reps),
		Status: status(c.List.P99 <= limit && c.Project.P99 <= limit)}
	if t.Status != met {
		t.Limit = fmt.Sprintf("the list's API call alone takes p50 %.0f ms, p99 %.0f ms", c.ListAPI.P50, c.ListAPI.P99)
	}
	return t
}
