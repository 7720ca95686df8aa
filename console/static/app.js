// serverlessd's console: a page per hash route (#/ the projects, #/projects/NAME
// one project), built from the HTTP API with the key the user signed in with.
// The key lives in this tab's sessionStorage only. Every value from the API
// reaches the page as text (textContent), never as HTML.

const KEY = "serverlessd.key"; // absent: signed out; "": a daemon without tokens
const POLL_MS = 2000;
const SLOW_POLL_MS = 10000;

// ---- the API -----------------------------------------------------------

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new APIError(0, "unreachable", "The daemon did not answer (" + e.message + "). Is it running?");
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const e = data && data.error;
    const msg = (e && e.message) || text.slice(0, 300) || resp.statusText;
    throw new APIError(resp.status, (e && e.code) || "http_" + resp.status, msg);
  }
  return data;
}

// metricsText reads the daemon's Prometheus metrics as text.
async function metricsText() {
  const headers = { Accept: "text/plain" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const resp = await fetch("/metrics", { headers });
  if (!resp.ok) throw new APIError(resp.status, "metrics", "the metrics are not readable with this key");
  return resp.text();
}

const enc = encodeURIComponent;

// ---- DOM helpers -------------------------------------------------------

function h(tag, attrs, ...kids) {
  return build(document.createElement(tag), attrs, kids);
}

function svg(tag, attrs, ...kids) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, kids);
}

function build(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function setMain(...kids) {
  const main = document.getElementById("main");
  main.replaceChildren(...kids);
}

// errorOwner is the refresh whose error the banner shows: that refresh
// clears it once it works again. An action's error (no owner) stays until
// the next action.
let errorOwner = null;

function showError(err, owner) {
  errorOwner = owner || null;
  if (err instanceof APIError && err.status === 401) {
    signOut("The daemon refused the key: " + err.message);
    return;
  }
  const box = document.getElementById("error");
  const where = err instanceof APIError && err.status ? ` (${err.code}, HTTP ${err.status})` : "";
  const text = (err.message || String(err)) + where;
  // Written only when it changes: a screen reader announces each write.
  if (box.textContent !== text || box.hidden) {
    box.textContent = text;
    box.hidden = false;
  }
}

function clearError() {
  errorOwner = null;
  const box = document.getElementById("error");
  box.hidden = true;
  box.textContent = "";
}

let noticeTimer = null;

function notice(msg) {
  const box = document.getElementById("notice");
  box.textContent = msg;
  box.hidden = !msg;
  clearTimeout(noticeTimer);
  if (msg) noticeTimer = setTimeout(() => notice(""), 8000);
}

// busy runs an action for a button: disabled while it runs, errors shown.
async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  clearError();
  try {
    await fn();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// ---- formatting --------------------------------------------------------

function ago(iso, now) {
  if (!iso) return "never";
  const s = Math.round((now - Date.parse(iso)) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return new Date(iso).toLocaleString();
}

function until(c, idleTimeout, now) {
  if (!c) return "—";
  if (c.idle_suspend_at) {
    const s = Math.round((Date.parse(c.idle_suspend_at) - now) / 1000);
    return s > 0 ? "in " + duration(s) : "due now";
  }
  if (c.state === "active") return idleTimeout ? "held by a session" : "never";
  return "—";
}

function duration(s) {
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function bytes(n) {
  if (!n) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function stateBadge(c) {
  const state = c ? c.state : "none";
  return h("span", { class: "state state-" + state, title: c && c.error ? c.error : null }, c ? state : "no compute");
}

// ---- routing and polling -----------------------------------------------

let stopPage = () => {};

// every runs fn now and then ms after each run ends, until the page changes.
function every(ms, fn) {
  let timer = null;
  let stopped = false;
  let turn = 0;
  const me = {};
  // Only the newest run reports and schedules the next: now() may start
  // one while another is still waiting for its reply.
  const run = async () => {
    const mine = ++turn;
    try {
      await fn();
      if (mine === turn && errorOwner === me) clearError();
    } catch (e) {
      if (!stopped && mine === turn) showError(e, me);
    }
    if (!stopped && mine === turn) timer = setTimeout(run, ms);
  };
  run();
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  stop.now = () => {
    clearTimeout(timer);
    if (!stopped) run();
  };
  return stop;
}

function onLeave(...stops) {
  const prev = stopPage;
  stopPage = () => {
    prev();
    stops.forEach((s) => s());
  };
}

// pageOf reads a project's page from the hash: #/projects/<id>, where the
// id is one the list linked to; null for anything else.
function projectOf(hash) {
  const m = hash.match(/^#\/projects\/([a-z0-9_]{1,64})$/);
  return m ? m[1] : null;
}

function route() {
  stopPage();
  stopPage = () => {};
  clearError();
  renderWho();
  if (sessionStorage.getItem(KEY) === null) {
    showSignIn();
    return;
  }
  const id = projectOf(location.hash);
  if (id) showProject(id);
  else showProjects();
  document.getElementById("main").focus({ preventScroll: true });
}

function renderWho() {
  const who = document.getElementById("who");
  if (sessionStorage.getItem(KEY) === null) {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(
    h("a", { href: "#/" }, "Projects"),
    h("button", { type: "button", class: "secondary small", id: "signout", onclick: () => signOut("") }, "Sign out"),
  );
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  stopPage();
  stopPage = () => {};
  renderWho();
  notice("");
  showSignIn(message);
}

// ---- sign in -----------------------------------------------------------

function showSignIn(message) {
  const input = h("input", { id: "key", type: "password", autocomplete: "off", spellcheck: "false", "aria-describedby": "key-help" });
  const err = h("p", { class: "form-error", id: "signin-error", role: "alert" }, message || "");
  const submit = h("button", { type: "submit", id: "signin" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("label", { for: "key" }, "API key"),
    input,
    h(
      "p",
      { id: "key-help", class: "muted" },
      "An admin token, or a tenant's or a project's API key (sdk_…). It stays in this browser tab. " +
        "Leave it empty for a daemon that runs without tokens on loopback.",
    ),
    submit,
    err,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      sessionStorage.setItem(KEY, input.value.trim());
      try {
        await api("GET", "/api/v1/projects?limit=1");
      } catch (e) {
        sessionStorage.removeItem(KEY);
        err.textContent = e.status === 401 ? "The daemon refused this key: " + e.message : e.message;
        input.focus();
        return;
      }
      if (!location.hash.startsWith("#/")) location.hash = "#/";
      route();
    });
  });
  setMain(form);
  input.focus();
}

// ---- connection strings and one-time passwords ---------------------------

function shellQuote(s) {
  return "'" + s.replaceAll("'", "'\\''") + "'";
}

function connectionStrings(c) {
  const host = c.host.includes(":") ? "[" + c.host + "]" : c.host;
  const u = c.mysql_user;
  const p = c.password;
  return [
    ["mariadb CLI", "cli", `mariadb -h ${c.host} -P ${c.port} -u ${u} -p${shellQuote(p)}`],
    ["JDBC", "jdbc", `jdbc:mariadb://${host}:${c.port}/?user=${enc(u)}&password=${enc(p)}`],
    ["Go DSN", "go", `${u}:${p}@tcp(${host}:${c.port})/`],
    ["Node", "node", `mysql://${enc(u)}:${enc(p)}@${host}:${c.port}/`],
  ];
}

// copy puts text on the clipboard and reports whether it did; focus
// returns to where it was (the copy button).
async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (plain HTTP off localhost): copy from a selection.
  }
  const back = document.activeElement;
  const ta = h("textarea", { class: "offscreen", "aria-hidden": "true" });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  const ok = document.execCommand("copy");
  ta.remove();
  if (back) back.focus();
  return ok;
}

function copyRow(label, value, id) {
  const status = h("span", { class: "copied", "aria-live": "polite" });
  const button = h(
    "button",
    {
      type: "button",
      class: "small secondary",
      "aria-label": "Copy " + label,
      "data-copy-button": id,
      onclick: async () => {
        status.textContent = (await copy(value)) ? "Copied" : "Copy failed: select the text";
        setTimeout(() => (status.textContent = ""), 2500);
      },
    },
    "Copy",
  );
  return h("div", { class: "copyrow" }, h("span", { class: "label" }, label), h("code", { "data-copy": id }, value), button, status);
}

function credentialsPanel(title, c) {
  const panel = h(
    "section",
    { class: "card secret", id: "credentials", "aria-labelledby": "credentials-title", tabindex: "-1" },
    h("h2", { id: "credentials-title" }, title),
    h("p", {}, "The password is shown once: the daemon keeps only its hash. Copy it, or a connection string, now."),
    copyRow("User", c.mysql_user, "user"),
    copyRow("Password", c.password, "password"),
    connectionStrings(c).map(([label, id, value]) => copyRow(label, value, id)),
  );
  panel.append(
    h("div", { class: "actions" }, h("button", {
        type: "button",
        class: "secondary",
        onclick: () => {
          panel.remove();
          document.getElementById("main").focus();
        },
      }, "I have saved it")),
  );
  return panel;
}

function showCredentials(where, title, c) {
  const panel = credentialsPanel(title, c);
  where.replaceChildren(panel);
  panel.focus();
}

// ---- confirmation ------------------------------------------------------

// confirmDialog asks before a destructive action; with typed, the user
// must type that text first. It resolves to true to go ahead.
function confirmDialog({ title, text, action, typed }) {
  return new Promise((resolve) => {
    const input = typed ? h("input", { id: "confirm-text", autocomplete: "off", spellcheck: "false" }) : null;
    const ok = h("button", { type: "button", class: "danger", id: "confirm-ok", disabled: !!typed }, action);
    const cancel = h("button", { type: "button", class: "secondary", id: "confirm-cancel" }, "Cancel");
    const dlg = h(
      "dialog",
      { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-desc" },
      h("h2", { id: "confirm-title" }, title),
      h("p", { id: "confirm-desc" }, text),
      typed ? [h("label", { for: "confirm-text" }, `Type ${typed} to confirm`), input] : null,
      h("div", { class: "actions" }, ok, cancel),
    );
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    if (input) input.addEventListener("input", () => (ok.disabled = input.value !== typed));
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      done(false);
    });
    document.body.append(dlg);
    dlg.showModal();
    (input || cancel).focus();
  });
}

// ---- the projects list --------------------------------------------------

const projectColumns = ["Name", "State", "Last activity", "Idle suspend", "Connections", "Size", "Tenant"];

// PAGE_SIZE rows per page of the list: a thousand rows took the browser
// longer to read and draw than the daemon took to list them.
const PAGE_SIZE = 100;

function showProjects() {
  const count = h("span", { class: "muted", id: "project-count", "aria-live": "polite" });
  const tbody = h("tbody", { id: "projects" });
  const filter = h("input", {
    id: "project-filter",
    type: "search",
    maxlength: "40",
    autocomplete: "off",
    "aria-controls": "projects",
    "aria-describedby": "filter-help",
  });
  const filterHelp = h("p", { id: "filter-help", class: "muted", "aria-live": "polite" });
  const prev = h("button", { type: "button", id: "page-prev", disabled: true }, "← Previous");
  const next = h("button", { type: "button", id: "page-next", disabled: true }, "Next →");
  const table = h(
    "table",
    {},
    h("caption", {}, "Projects ", count),
    h("thead", {}, h("tr", {}, projectColumns.map((t, i) => h("th", { scope: "col", class: i === 4 ? "num" : null }, t)))),
    tbody,
  );
  const tools = h(
    "div",
    { class: "inline" },
    h("div", {}, h("label", { for: "project-filter" }, "Name contains"), filter),
    prev,
    next,
    filterHelp,
  );
  const created = h("div", { id: "created" });
  setMain(h("h1", {}, "Projects"), createProjectForm(created), created, h("section", { class: "card", "aria-label": "Projects" }, tools, table));

  const rows = new Map();
  let projects = [];
  // starts holds the after= of every page up to the shown one; more says
  // whether a page follows it. The API lists by id, so pages are stable
  // while projects come and go.
  let starts = [""];
  let more = false;
  let match = "";
  // fresh: the next reply starts a page (or the first); until it comes,
  // the clock leaves the rows alone.
  let fresh = true;
  const query = () =>
    `/api/v1/projects?include=compute&limit=${PAGE_SIZE + 1}` +
    `&after=${encodeURIComponent(starts[starts.length - 1])}&name_contains=${encodeURIComponent(match)}`;
  const render = (newPage) => {
    const now = Date.now();
    const first = (starts.length - 1) * PAGE_SIZE;
    count.textContent =
      starts.length === 1 && !more ? `(${projects.length})` : `(${first + 1}–${first + projects.length})`;
    prev.disabled = starts.length === 1;
    next.disabled = !more;
    if (newPage) {
      // A new page: every row at once, off the page.
      rows.clear();
      const all = document.createDocumentFragment();
      for (const p of projects) {
        const row = projectRow(p, now);
        rows.set(p.id, row);
        all.append(row);
      }
      tbody.replaceChildren(all);
    } else {
      updateRows(tbody, rows, projects, now);
    }
    if (!projects.length && !tbody.firstChild) {
      const none = match ? `No project's name contains “${match}”.` : "No projects yet.";
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: projectColumns.length, class: "muted" }, none)));
    }
  };
  const poll = every(POLL_MS, async () => {
    const q = query();
    const r = await api("GET", q);
    if (q !== query()) return; // the page or the filter changed meanwhile
    if (!r.projects.length && starts.length > 1) {
      // Its projects were deleted: the page before it is still there.
      turnTo(() => starts.pop());
      return;
    }
    more = r.projects.length > PAGE_SIZE;
    projects = r.projects.slice(0, PAGE_SIZE);
    render(fresh);
    fresh = false;
  });
  // A turn applies at once; a reply to an earlier one is dropped above.
  const turnTo = (change) => {
    change();
    fresh = true;
    poll.now();
  };
  next.addEventListener("click", () => {
    // Next reads the shown page's last id: not until the page is shown.
    if (!fresh && more) turnTo(() => starts.push(projects[projects.length - 1].id));
  });
  prev.addEventListener("click", () => {
    if (starts.length > 1) turnTo(() => starts.pop());
  });
  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      const m = filter.value.trim().toLowerCase();
      // Names hold only these: anything else would match nothing.
      const ok = /^[a-z0-9-]*$/.test(m);
      filterHelp.textContent = ok ? "" : "Names hold only a–z, 0–9 and '-'.";
      if (ok && m !== match) turnTo(() => ((match = m), (starts = [""])));
    }, 250);
  });
  const clock = setInterval(() => fresh || render(false), 1000);
  onLeave(poll, () => clearInterval(clock), () => clearTimeout(typing));
}

// updateRows brings a page's rows up to date in place, touching only what
// changed.
function updateRows(tbody, rows, projects, now) {
  const seen = new Set();
  let prev = null;
  for (const p of projects) {
    seen.add(p.id);
    let row = rows.get(p.id);
    if (!row) {
      row = projectRow(p, now);
      rows.set(p.id, row);
    } else {
      updateProjectRow(row, p, now);
    }
    // Moved only when out of place: moving a row would take the focus
    // off a link in it.
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  if (projects.length) tbody.querySelectorAll("tr.empty").forEach((r) => r.remove());
}

// rowTemplate is a projects-list row without its values: cloning it is
// cheaper than building each of a thousand rows element by element.
let rowTemplate = null;

function projectRow(p, now) {
  if (!rowTemplate) {
    rowTemplate = h("tr", {}, projectColumns.map((_, i) => h("td", { class: i === 4 ? "num" : null })));
    rowTemplate.firstChild.append(h("a"));
    rowTemplate.children[1].append(h("span", { class: "state" }));
  }
  const row = rowTemplate.cloneNode(true);
  updateProjectRow(row, p, now);
  return row;
}

function updateProjectRow(row, p, now) {
  const c = p.compute;
  const cells = row.children;
  if (row.dataset.project !== p.name) {
    const link = cells[0].firstChild;
    link.textContent = p.name;
    // By id: a name is unique only in its tenant, and an admin sees all.
    link.setAttribute("href", "#/projects/" + p.id);
    row.dataset.project = p.name;
  }
  const state = c ? c.state : "none";
  const badge = cells[1].firstChild;
  if (row.dataset.state !== state || badge.title !== ((c && c.error) || "")) {
    badge.className = "state state-" + state;
    badge.textContent = c ? state : "no compute";
    badge.title = (c && c.error) || "";
    row.dataset.state = state;
  }
  setText(cells[2], c ? ago(c.last_active, now) : "—");
  setText(cells[3], until(c, p.config.idle_timeout, now));
  setText(cells[4], c ? String(c.connections) : "—");
  setText(cells[5], c ? bytes(c.storage_bytes) : "—");
  setText(cells[6], p.tenant_id);
}

// setText changes a cell only when its text changed: a refresh of a
// thousand rows then touches only what moved.
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function createProjectForm(created) {
  const name = h("input", {
    id: "new-name",
    required: true,
    pattern: "[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?",
    maxlength: "40",
    autocomplete: "off",
    "aria-describedby": "new-help",
  });
  const idle = h("input", { id: "new-idle", type: "number", min: "0", placeholder: "300", inputmode: "numeric" });
  const submit = h("button", { type: "submit", id: "create" }, "Create project");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "new-title" },
    h("h2", { id: "new-title" }, "New project"),
    h(
      "div",
      { class: "inline" },
      h("div", {}, h("label", { for: "new-name" }, "Name"), name),
      h("div", {}, h("label", { for: "new-idle" }, "Idle timeout (seconds)"), idle),
      submit,
    ),
    h("p", { id: "new-help", class: "muted" }, "1–40 characters from a–z, 0–9 and '-'. It gets a database and a root role."),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const body = { name: name.value.trim() };
      if (idle.value !== "") body.config = { idle_timeout: Number(idle.value) };
      const r = await api("POST", "/api/v1/projects", body);
      showCredentials(created, `Project ${r.project.name} created`, r.role);
      name.value = "";
      await api("POST", `/api/v1/projects/${r.project.id}/compute`, {});
    });
  });
  return form;
}

// ---- one project -------------------------------------------------------

// showProject draws one project's page. Its requests may answer after
// the user left it: left tells them to draw nothing then.
function showProject(id) {
  const base = "/api/v1/projects/" + id;
  let project = null;
  let left = false;
  const page = { base, secrets: h("div", { id: "secrets" }), project: () => project, gone: () => left };
  const facts = h("dl", { class: "facts", id: "compute-facts" });
  const title = h("span", {}, id);
  const badge = h("span", { id: "project-state" });
  const buttons = computeButtons(page, () => refresh());
  const roles = h("tbody", { id: "roles" });
  const ops = h("tbody", { id: "operations" });
  const usage = h("div", { id: "usage-charts", class: "grid" });
  const wakes = h("div", { id: "wake-chart" });
  const granularity = h(
    "select",
    { id: "granularity" },
    h("option", { value: "hour" }, "per hour, last 24 h"),
    h("option", { value: "day" }, "per day, last 30 days"),
  );

  setMain(
    h("p", {}, h("a", { href: "#/" }, "← Projects")),
    h("h1", {}, title, " ", badge),
    h("section", { class: "card", "aria-labelledby": "compute-title" }, h("h2", { id: "compute-title" }, "Compute"), facts, buttons.box),
    page.secrets,
    h(
      "section",
      { class: "card", "aria-labelledby": "roles-title" },
      h("h2", { id: "roles-title" }, "Roles"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Role", "Log in as", "Created", ""].map((t) => h("th", { scope: "col" }, t)))), roles),
      createRoleForm(page, () => loadRoles()),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "usage-title" },
      h("h2", { id: "usage-title" }, "Usage"),
      h("div", { class: "inline" }, h("label", { for: "granularity" }, "Show"), granularity),
      usage,
    ),
    h("section", { class: "card", "aria-labelledby": "wakes-title" }, h("h2", { id: "wakes-title" }, "Cold-wake latency (this daemon)"), wakes),
    h(
      "section",
      { class: "card", "aria-labelledby": "ops-title" },
      h("h2", { id: "ops-title" }, "Operations"),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Started", "Action", "Why", "Status", "Duration", ""].map((t, i) => h("th", { scope: "col", class: i === 4 ? "num" : null }, t)))),
        ops,
      ),
    ),
  );

  let stopCharts = null;
  const refresh = async () => {
    const first = !project;
    // The roles come with the first refresh, in the same round trip.
    const [r, o, rs] = await Promise.all([
      api("GET", base + "?include=compute"),
      api("GET", base + "/operations"),
      first ? api("GET", base + "/roles") : null,
    ]);
    if (left) return;
    project = r.project;
    title.textContent = project.name;
    renderCompute(facts, project, Date.now());
    badge.replaceChildren(stateBadge(project.compute));
    buttons.update(project.compute);
    ops.replaceChildren(...o.operations.map(operationRow));
    if (rs) drawRoles(rs.roles);
    // The charts only once the page's facts are drawn: they come second.
    if (!stopCharts) stopCharts = every(SLOW_POLL_MS, loadCharts);
  };
  // A role's login name needs the project, which refresh has read first.
  const drawRoles = (list) => roles.replaceChildren(...list.map((role) => roleRow(page, role, loadRoles)));
  const loadRoles = async () => {
    const r = await api("GET", base + "/roles");
    if (!left) drawRoles(r.roles);
  };
  const loadCharts = async () => {
    const g = granularity.value;
    const span = g === "day" ? 30 * 86400e3 : 86400e3;
    const from = new Date(Date.now() - span).toISOString().replace(/\.\d+Z$/, "Z");
    const r = await api("GET", `${base}/usage?granularity=${g}&from=${enc(from)}`);
    // A reply for the other granularity, asked before a change, is dropped.
    if (left || g !== granularity.value) return;
    usage.replaceChildren(...usageCharts(r.buckets, g));
    let chart;
    try {
      chart = wakeChart(await metricsText());
    } catch (e) {
      chart = h("p", { class: "muted" }, "Not available: " + e.message + ".");
    }
    if (!left) wakes.replaceChildren(chart);
  };
  granularity.addEventListener("change", () => loadCharts().catch((e) => showError(e)));
  const poll = every(POLL_MS, refresh);
  const clock = setInterval(() => project && renderCompute(facts, project, Date.now()), 1000);
  onLeave(poll, () => stopCharts && stopCharts(), () => clearInterval(clock), () => (left = true));
}

// loginOf is how a role logs in through the proxy: by the project's name
// in the default tenant, by its id in any other.
function loginOf(project, role) {
  return (project.tenant_id === "ten_default" ? project.name : project.id) + "." + role;
}

function renderCompute(facts, p, now) {
  const c = p.compute;
  const rows = c
    ? [
        ["State", stateBadge(c)],
        ["Compute", c.id],
        ["Last activity", ago(c.last_active, now)],
        ["Idle suspend", until(c, p.config.idle_timeout, now)],
        ["Idle timeout", p.config.idle_timeout ? p.config.idle_timeout + " s" : "never suspends"],
        ["Connections", String(c.connections)],
        ["Size", bytes(c.storage_bytes)],
      ]
    : [["State", "This project has no compute yet."]];
  if (c && c.error) rows.push(["Last error", c.error]);
  facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)]));
}

// computeButtons are the compute's actions. They start disabled: they
// act on the compute the first refresh finds.
function computeButtons(page, refresh) {
  let compute = null;
  const act = (label, id, fn) => {
    const b = h("button", { type: "button", id, disabled: true }, label);
    b.addEventListener("click", async () => {
      await busy(b, async () => {
        await fn();
        if (!page.gone()) await refresh();
      });
      update(compute); // busy enabled it again, whatever the state
    });
    return b;
  };
  const suspend = act("Suspend", "suspend", () => api("POST", `${page.base}/compute/${compute.id}/suspend`));
  const resume = act("Resume", "resume", () => api("POST", `${page.base}/compute/${compute.id}/resume`));
  const create = act("Create compute", "create-compute", () => api("POST", `${page.base}/compute`, {}));
  create.hidden = true;
  const del = h("button", { type: "button", id: "delete", class: "danger", disabled: true }, "Delete project");
  del.addEventListener("click", () => deleteProject(del, page));
  const box = h("div", { class: "actions" }, suspend, resume, create, del);
  const update = (c) => {
    compute = c;
    if (suspend.getAttribute("aria-busy") || resume.getAttribute("aria-busy") || create.getAttribute("aria-busy")) return;
    suspend.disabled = !c || c.state !== "active";
    resume.disabled = !c || c.state !== "suspended";
    create.hidden = !!c;
    create.disabled = !!c;
    del.disabled = false;
  };
  return { box, update };
}

async function deleteProject(button, page) {
  const name = page.project().name;
  const yes = await confirmDialog({
    title: `Delete ${name}?`,
    text: "Its compute and its data are deleted. With backups on, the daemon keeps them for the retention window, for undelete.",
    action: "Delete project",
    typed: name,
  });
  if (!yes) return;
  await busy(button, async () => {
    await api("DELETE", page.base);
    notice(`Project ${name} deleted.`);
    location.hash = "#/";
  });
}

function operationRow(op) {
  const dur = op.duration_ms !== undefined ? Math.round(op.duration_ms) + " ms" : op.finished_at ? "" : "running";
  return h(
    "tr",
    { "data-op": op.action },
    h("td", {}, when(op.started_at)),
    h("td", {}, op.action),
    h("td", {}, op.reason || ""),
    h("td", {}, op.status),
    h("td", { class: "num" }, dur),
    h("td", { class: "muted" }, op.error || (op.detached_sessions ? op.detached_sessions + " sessions kept open" : "")),
  );
}

function roleRow(page, role, reload) {
  const reset = h("button", { type: "button", class: "small secondary" }, "Reset password");
  const del = h("button", { type: "button", class: "small secondary" }, "Delete");
  const path = `${page.base}/roles/${enc(role.name)}`;
  reset.addEventListener("click", async () => {
    const yes = await confirmDialog({
      title: `Reset the password of ${role.name}?`,
      text: "The old password stops working at once; clients that use it must be given the new one.",
      action: "Reset password",
    });
    if (!yes) return;
    busy(reset, async () => {
      const r = await api("POST", path + "/reset_password");
      showCredentials(page.secrets, `New password of ${role.name}`, r.credentials);
    });
  });
  del.addEventListener("click", async () => {
    const yes = await confirmDialog({
      title: `Delete the role ${role.name}?`,
      text: "Its connections can no longer log in.",
      action: "Delete role",
    });
    if (!yes) return;
    busy(del, async () => {
      await api("DELETE", path);
      await reload();
    });
  });
  return h(
    "tr",
    { "data-role": role.name },
    h("td", {}, role.name),
    h("td", {}, h("code", {}, loginOf(page.project(), role.name))),
    h("td", {}, when(role.created_at)),
    h("td", {}, h("div", { class: "actions" }, reset, del)),
  );
}

function createRoleForm(page, reload) {
  const input = h("input", { id: "new-role", required: true, maxlength: "32", autocomplete: "off" });
  const submit = h("button", { type: "submit", id: "create-role" }, "Create role");
  const form = h("form", { class: "inline" }, h("div", {}, h("label", { for: "new-role" }, "New role"), input), submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const r = await api("POST", `${page.base}/roles`, { name: input.value.trim() });
      input.value = "";
      showCredentials(page.secrets, `Role ${r.role.name} created`, r.credentials);
      await reload();
    });
  });
  return form;
}

// ---- charts ------------------------------------------------------------

// barChart draws values as SVG bars scaled to the chart's box, with the
// labels as text beside it and a table of the same values for screen
// readers.
function barChart(id, title, points, fmt) {
  const W = 300;
  const H = 100;
  const max = Math.max(0, ...points.map((p) => p.value));
  const bw = points.length ? W / points.length : 0;
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": `${title}: ${points.length} bars, the largest ${fmt(max)}`,
  });
  points.forEach((p, i) => {
    const bh = max > 0 && p.value > 0 ? Math.max(1, (H * p.value) / max) : 0;
    const rect = svg("rect", {
      class: "bar",
      x: (i * bw + bw * 0.1).toFixed(2),
      y: (H - bh).toFixed(2),
      width: Math.max(0.5, bw * 0.8).toFixed(2),
      height: bh.toFixed(2),
      "data-value": p.value,
    });
    rect.append(svg("title", {}, `${p.label}: ${fmt(p.value)}`));
    chart.append(rect);
  });
  const first = points.length ? points[0].label : "";
  const last = points.length ? points[points.length - 1].label : "";
  const axis = h("div", { class: "chart-axis", "aria-hidden": "true" }, h("span", {}, first), h("span", {}, "max " + fmt(max)), h("span", {}, last));
  const table = h(
    "table",
    { class: "visually-hidden" },
    h("caption", {}, title),
    h("tbody", {}, points.map((p) => h("tr", {}, h("th", { scope: "row" }, p.label), h("td", {}, fmt(p.value))))),
  );
  return h("figure", { class: "chart", id }, h("figcaption", {}, title), chart, axis, table);
}

function usageCharts(buckets, granularity) {
  const label = (b) => {
    const d = new Date(b.start);
    // Day buckets start at midnight UTC: shown in the browser's zone, they
    // would be named for the day before, west of Greenwich.
    return granularity === "day"
      ? d.toLocaleDateString([], { timeZone: "UTC" })
      : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  };
  const pts = (f) => buckets.map((b) => ({ label: label(b), value: f(b) }));
  return [
    barChart("chart-compute", "Compute-seconds", pts((b) => b.compute_seconds), (v) => v.toFixed(v < 10 ? 1 : 0) + " s"),
    barChart("chart-storage", "Storage", pts((b) => b.storage_bytes), bytes),
    barChart("chart-bytes", "Proxied bytes (in + out)", pts((b) => b.bytes_in + b.bytes_out), bytes),
  ];
}

// wakeBuckets reads the cold wakes' histogram from the metrics text: the
// count in each bucket (not cumulative), by upper bound.
function wakeBuckets(text) {
  const re = /^serverlessd_wake_duration_seconds_bucket\{([^}]*)\} ([0-9.e+-]+)$/;
  const cum = [];
  for (const line of text.split("\n")) {
    const m = line.match(re);
    if (!m || !/kind="cold"/.test(m[1])) continue;
    const le = (m[1].match(/le="([^"]+)"/) || [])[1];
    if (le) cum.push({ le: le === "+Inf" ? Infinity : Number(le), n: Number(m[2]) });
  }
  cum.sort((a, b) => a.le - b.le);
  return cum.map((b, i) => ({ le: b.le, n: b.n - (i ? cum[i - 1].n : 0), total: b.n }));
}

function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1].total : 0;
  const b = buckets.find((x) => x.total >= q * total);
  return b ? b.le : NaN;
}

function wakeChart(text) {
  const buckets = wakeBuckets(text);
  const total = buckets.length ? buckets[buckets.length - 1].total : 0;
  if (!total) return h("p", { class: "muted", id: "wake-empty" }, "No cold wake since the daemon started.");
  const finite = buckets.filter((b) => b.le !== Infinity);
  const top = finite.length ? finite[finite.length - 1].le : 0;
  const secs = (le) => (le < 1 ? Math.round(le * 1000) + " ms" : le + " s");
  const ms = (le) => (le === Infinity ? "> " + secs(top) : "≤ " + secs(le));
  const pts = buckets.filter((b) => b.le !== Infinity || b.n > 0).map((b) => ({ label: ms(b.le), value: b.n }));
  return h(
    "div",
    {},
    h("p", {}, `${total} cold ${total === 1 ? "wake" : "wakes"}; p50 ${ms(quantile(buckets, 0.5))}, p99 ${ms(quantile(buckets, 0.99))}.`),
    barChart("chart-wakes", "Cold wakes by latency", pts, (v) => String(v)),
  );
}

// ---- start -------------------------------------------------------------

// Only #/... hashes are pages: #main (the skip link) is a place on this one.
window.addEventListener("hashchange", () => {
  if (location.hash === "" || location.hash.startsWith("#/")) route();
});
route();
