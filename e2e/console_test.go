package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which `make deps-test` installs.
const chromiumPath = "/usr/bin/chromium"

// artifactsDir is where the console's screenshots go: $SERVERLESSD_ARTIFACTS,
// else artifacts/ at the top of the tree (ignored by git).
func artifactsDir(t *testing.T, name string) string {
	t.Helper()
	root := os.Getenv("SERVERLESSD_ARTIFACTS")
	if root == "" {
		root = filepath.Join("..", "artifacts")
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one headless Chromium tab, closed when the test ends.
type browser struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
	shots     int
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the console test needs Debian's chromium at %s (make deps-test installs it): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first action starts the browser under the context it is given:
	// the tab's own, not a step's timeout that would end it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return &browser{t: t, ctx: ctx, artifacts: artifactsDir(t, filepath.Join("console", t.Name()))}
}

// do runs steps, each bounded so that nothing waits forever.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("console: %s: %v", what, err)
	}
}

// text reads the text of the first element sel matches.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.TextContent(sel))
	if err != nil {
		b.t.Fatalf("console: read %s: %v", sel, err)
	}
	return s
}

// until waits for a JavaScript condition to hold.
func (b *browser) until(what, js string, within time.Duration) {
	b.t.Helper()
	b.do(what, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond)))
}

// shot saves a screenshot of the whole page as a test artifact.
func (b *browser) shot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.shots++
	path := filepath.Join(b.artifacts, fmt.Sprintf("%02d-%s.png", b.shots, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// TestConsole drives the web console in a real headless Chromium against a
// real daemon, as a user would: a wrong key is refused on the page; with the
// right one, a project is created, its connection strings log in through
// the proxy, it turns suspended after its idle timeout while the page only
// polls, it resumes, its operations and usage are drawn, and it is deleted.
func TestConsole(t *testing.T) {
	const token = "console-test-token-0123456789"
	d := startDaemon(t, "", fastIdle, "SERVERLESSD_API_TOKENS="+token)
	b := newBrowser(t)
	defer func() {
		if t.Failed() {
			t.Logf("screenshots in %s", b.artifacts)
		}
	}()

	// The page itself needs no key, and runs only its own scripts.
	resp, err := http.Get("http://" + d.api + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}

	b.do("open the console", chromedp.Navigate("http://"+d.api+"/"), chromedp.WaitVisible("#key"))
	b.do("sign in with a wrong key", chromedp.SendKeys("#key", "sdk_not-a-key"), chromedp.Click("#signin"))
	b.until("the wrong key's error", `document.querySelector("#signin-error").textContent.includes("refused")`, 10*time.Second)
	b.shot("wrong-key")

	// Keyboard only: the key field has the focus; Enter submits.
	b.do("sign in", chromedp.Evaluate[chromedp.Void](`document.querySelector("#key").value = ""`), chromedp.Focus("#key"), chromedp.KeyEvent(token+"\r"), chromedp.WaitVisible("#new-name"))
	b.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	b.do("create a project", chromedp.SendKeys("#new-name", "webshop"), chromedp.SendKeys("#new-idle", "2"), chromedp.Click("#create"),
		chromedp.WaitVisible(`#credentials code[data-copy="cli"]`))
	cli := b.text(`#credentials code[data-copy="cli"]`)
	dsn := b.text(`#credentials code[data-copy="go"]`)
	b.do("copy the connection string", chromedp.Click(`button[data-copy-button="cli"]`))
	b.until("the copy's confirmation", `[...document.querySelectorAll(".copied")].some(e => e.textContent === "Copied")`, 5*time.Second)
	b.shot("created")
	b.until("the compute active in the list", `document.querySelector('tr[data-project="webshop"][data-state="active"]')`, 60*time.Second)

	// What the page gave logs in through the proxy: the mariadb command
	// line as it is, and the Go DSN.
	out, err := exec.Command("sh", "-c", cli+` -N -e "CREATE DATABASE shop; SELECT 'cli works'"`).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cli works") {
		t.Fatalf("the console's mariadb command line %q: %v\n%s", cli, err, out)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("the console's Go DSN %q: %v", dsn, err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE shop.t (id INT PRIMARY KEY)"); err != nil {
		t.Fatalf("through the Go DSN: %v", err)
	}
	db.SetMaxIdleConns(0) // let the compute go idle

	// The idle scheduler suspends it; the list turns without a reload.
	b.until("the compute suspended in the list", `document.querySelector('tr[data-project="webshop"][data-state="suspended"]')`, 60*time.Second)
	b.shot("suspended")
	// A login wakes it cold, for the wake chart; it then suspends again.
	if _, err := db.Exec("INSERT INTO shop.t VALUES (1)"); err != nil {
		t.Fatalf("wake through the Go DSN: %v", err)
	}
	b.until("the compute suspended again", `document.querySelector('tr[data-project="webshop"][data-state="suspended"]')`, 60*time.Second)
	b.do("the page was never reloaded", chromedp.Poll[chromedp.Void](`window.notReloaded === true`, chromedp.WithPollingTimeout(time.Second)))

	b.do("open the project", chromedp.Click(`tr[data-project="webshop"] a`), chromedp.WaitVisible("#compute-facts"))
	b.until("resume enabled", `!document.querySelector("#resume").disabled`, 10*time.Second)
	b.do("resume", chromedp.Click("#resume"))
	b.until("the compute active", `document.querySelector("#project-state .state-active")`, 60*time.Second)
	b.until("the operations", `["create", "start", "suspend"].every(a => document.querySelector('#operations tr[data-op="' + a + '"]'))`, 10*time.Second)
	b.until("a usage bar", `[...document.querySelectorAll("#chart-compute rect.bar")].some(r => Number(r.dataset.value) > 0)`, 30*time.Second)
	b.until("the cold-wake chart", `[...document.querySelectorAll("#chart-wakes rect.bar")].some(r => Number(r.dataset.value) > 0)`, 30*time.Second)
	b.do("create a role", chromedp.SendKeys("#new-role", "app"), chromedp.Click("#create-role"),
		chromedp.WaitVisible(`#credentials code[data-copy="user"]`), chromedp.WaitVisible(`#roles tr[data-role="app"]`))
	if u := b.text(`#credentials code[data-copy="user"]`); u != "webshop.app" {
		t.Fatalf("the new role's user is %q, want webshop.app", u)
	}
	b.shot("project")

	// Delete asks first: Escape cancels; typing the name confirms.
	b.do("cancel a delete", chromedp.Click("#delete"), chromedp.WaitVisible("#confirm-text"), chromedp.KeyEvent("\x1b"), chromedp.WaitNotPresent("#confirm-text"))
	b.do("delete", chromedp.Click("#delete"), chromedp.WaitVisible("#confirm-text"), chromedp.SendKeys("#confirm-text", "webshop"),
		chromedp.Click("#confirm-ok"))
	b.until("back on the list, without the project", `location.hash === "#/" && document.querySelector("#projects") &&
		!document.querySelector('tr[data-project="webshop"]') && document.querySelector("#notice").textContent.includes("deleted")`, 60*time.Second)
	b.shot("deleted")
	req, _ := http.NewRequest("GET", "http://"+d.api+"/api/v1/projects/webshop", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 404 {
		t.Fatalf("the deleted project is still served: %v %v", r, err)
	}

	// An API error reaches the page as a message, not a blank screen.
	b.do("create a project with a bad name", chromedp.SendKeys("#new-name", "Bad_Name"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#new-name").removeAttribute("pattern")`), chromedp.Click("#create"))
	b.until("the API's error on the page", `!document.querySelector("#error").hidden && document.querySelector("#error").textContent.includes("invalid project name")`, 10*time.Second)
	b.shot("error")
}

// TestConsoleKeyScope signs in with a tenant's API key: the console shows
// that tenant's projects and no other's, and creates new ones in it.
func TestConsoleKeyScope(t *testing.T) {
	d := startDaemon(t, "")
	if st := d.postJSON(t, "/api/v1/tenants", `{"name":"team-a"}`, &struct{}{}); st != 201 {
		t.Fatalf("create tenant: %d", st)
	}
	// Two projects named shop: team-a's, and the default tenant's.
	var teamShop projectOut
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"shop","tenant":"team-a"}`, &teamShop); st != 201 {
		t.Fatalf("create team-a's shop: %d", st)
	}
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"shop"}`, &struct{}{}); st != 201 {
		t.Fatalf("create the default tenant's shop: %d", st)
	}
	var key struct {
		Key string `json:"key"`
	}
	if st := d.postJSON(t, "/api/v1/tenants/team-a/api_keys", `{"name":"console","scope":"tenant"}`, &key); st != 201 {
		t.Fatalf("create an API key: %d", st)
	}
	b := newBrowser(t)
	b.do("sign in with the tenant's key", chromedp.Navigate("http://"+d.api+"/"), chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", key.Key), chromedp.Click("#signin"), chromedp.WaitVisible(`tr[data-project="shop"]`))
	b.do("create a project in the key's tenant", chromedp.SendKeys("#new-name", "api"), chromedp.Click("#create"),
		chromedp.WaitVisible(`#credentials code[data-copy="user"]`), chromedp.WaitVisible(`tr[data-project="api"]`))
	b.shot("tenant-key")
	if n := b.text("#project-count"); n != "(2)" {
		t.Fatalf("the tenant's key lists %s projects, want (2): its shop and api, not the default tenant's shop", n)
	}
	if u := b.text(`#credentials code[data-copy="user"]`); !strings.HasPrefix(u, "prj_") || !strings.HasSuffix(u, ".root") {
		t.Fatalf("a project outside the default tenant logs in by id, got the user %q", u)
	}
	var tenant struct {
		Tenant struct{ ID string } `json:"tenant"`
	}
	d.getJSON("/api/v1/tenants/team-a", &tenant)
	var api struct {
		Project struct {
			TenantID string `json:"tenant_id"`
		} `json:"project"`
	}
	d.getJSON("/api/v1/projects/"+strings.TrimSuffix(b.text(`#credentials code[data-copy="user"]`), ".root"), &api)
	if api.Project.TenantID == "" || api.Project.TenantID != tenant.Tenant.ID {
		t.Fatalf("the console's project is in tenant %q, want team-a's %q", api.Project.TenantID, tenant.Tenant.ID)
	}

	// Without a key (no tokens on loopback: an admin), both shops are
	// listed, and each link opens its own project, by id.
	b.do("sign out", chromedp.Click("#signout"), chromedp.WaitVisible("#key"))
	b.do("sign in as an admin", chromedp.Click("#signin"), chromedp.WaitVisible(`a[href="#/projects/`+teamShop.Project.ID+`"]`))
	b.do("open team-a's shop", chromedp.Click(`a[href="#/projects/`+teamShop.Project.ID+`"]`), chromedp.WaitVisible(`#roles tr[data-role="root"]`))
	if login := b.text(`#roles tr[data-role="root"] code`); login != teamShop.Project.ID+".root" {
		t.Fatalf("team-a's shop shows the login %q, want %s.root", login, teamShop.Project.ID)
	}
	b.shot("admin-other-tenant")
}

// TestConsoleListPages: the projects list shows a page of 100 at a time,
// turns pages forward and back, and filters by name on the daemon.
func TestConsoleListPages(t *testing.T) {
	d := startDaemon(t, "")
	if st := d.postJSON(t, "/api/v1/tenants", `{"name":"many"}`, &struct{}{}); st != 201 {
		t.Fatalf("create tenant: %d", st)
	}
	for i := 1; i <= 105; i++ {
		body := fmt.Sprintf(`{"name":"app-%03d","tenant":"many"}`, i)
		if st := d.postJSON(t, "/api/v1/projects", body, &struct{}{}); st != 201 {
			t.Fatalf("create project %d: %d", i, st)
		}
	}
	var key struct {
		Key string `json:"key"`
	}
	if st := d.postJSON(t, "/api/v1/tenants/many/api_keys", `{"name":"console","scope":"tenant"}`, &key); st != 201 {
		t.Fatalf("create an API key: %d", st)
	}
	b := newBrowser(t)
	rows := `document.querySelectorAll("#projects tr[data-project]").length`
	b.do("sign in", chromedp.Navigate("http://"+d.api+"/"), chromedp.WaitVisible("#key"),
		chromedp.SendKeys("#key", key.Key), chromedp.Click("#signin"), chromedp.WaitVisible(`#projects tr[data-project]`))
	b.until("the first page", rows+` === 100 && document.querySelector("#project-count").textContent === "(1–100)" &&
		document.querySelector("#page-prev").disabled && !document.querySelector("#page-next").disabled`, 10*time.Second)
	b.shot("list-page-1")
	b.do("next page", chromedp.Click("#page-next"))
	b.until("the second page", rows+` === 5 && document.querySelector("#project-count").textContent === "(101–105)" &&
		document.querySelector("#page-next").disabled`, 10*time.Second)
	b.do("previous page", chromedp.Click("#page-prev"))
	b.until("the first page again", rows+` === 100 && document.querySelector("#page-prev").disabled`, 10*time.Second)

	// The filter asks the daemon, so it finds projects of any page.
	b.do("filter", chromedp.SendKeys("#project-filter", "APP-10"))
	b.until("the filtered list", rows+` === 6 && document.querySelector("#project-count").textContent === "(6)" &&
		[...document.querySelectorAll("#projects tr[data-project]")].every(r => r.dataset.project.startsWith("app-10"))`, 10*time.Second)
	b.shot("list-filtered")
	b.do("filter matching nothing", chromedp.SendKeys("#project-filter", "9"))
	b.until("no match said so", rows+` === 0 && document.querySelector("#projects").textContent.includes("app-109")`, 10*time.Second)
	// A character no name holds is refused on the page; taking it out
	// filters again.
	b.do("a character no name holds", chromedp.SendKeys("#project-filter", "_"))
	b.until("the page says so", `document.querySelector("#filter-help").textContent.includes("a–z")`, 10*time.Second)
	b.do("take it out, and the 9", chromedp.SendKeys("#project-filter", "\b\b"))
	b.until("the filtered list again", rows+` === 6 && document.querySelector("#filter-help").textContent === ""`, 10*time.Second)
}
