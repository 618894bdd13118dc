// rota dashboard: a small single-page app over the JSON API (/api/*). No build step.
// Every value that comes from the store is put in the page with textContent (the h()
// helper below), never parsed as HTML.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const WINDOW_S = 15 * 60; // charts show the last 15 minutes
  const JOB_STATES = ["waiting", "scheduled", "pending", "assigned", "running", "retrying",
    "succeeded", "dead", "cancelled", "upstream_failed"];
  // Final states; upstream_failed (a parent failed, the job never ran) counts as a failure.
  const FINAL = new Set(["succeeded", "dead", "cancelled", "upstream_failed"]);
  const MAX_PARENTS_SHOWN = 200;
  const SVG = "http://www.w3.org/2000/svg";

  const app = { session: null, status: null, samples: [], historyInfo: null, timer: null,
    lastOk: 0, route: null, jobLive: false, jobBusy: false, schedules: null, schedulesError: null };

  // ---- DOM helpers: text only -------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function view() { return document.getElementById("view"); }
  function replace(el, ...children) { el.replaceChildren(); append(el, children); }

  function notice(text, isError) {
    const el = document.getElementById("notice");
    el.textContent = text;
    el.className = isError ? "notice error" : "notice";
    el.hidden = !text;
  }

  // ---- API ----------------------------------------------------------------------------
  async function api(path, options) {
    const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    if (resp.status === 401) {
      window.location.assign("/login");
      throw new Error("not signed in");
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) throw new Error((body && body.error) || resp.status + " " + resp.statusText);
    return body;
  }
  async function post(path, payload) {
    const headers = { "Content-Type": "application/json" };
    if (app.session && app.session.csrf_token) headers["X-CSRF-Token"] = app.session.csrf_token;
    return api(path, { method: "POST", headers, body: JSON.stringify(payload || {}) });
  }

  // ---- formatting ---------------------------------------------------------------------
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    const v = Math.max(0, seconds);
    if (v < 60) return v.toFixed(1) + " s";
    if (v < 3600) return Math.floor(v / 60) + " min " + Math.floor(v % 60) + " s";
    return (v / 3600).toFixed(1) + " h";
  }
  function when(ts) {
    if (ts === null || ts === undefined) return "-";
    return new Date(ts * 1000).toLocaleString();
  }
  function qty(name, v) {
    if (name === "mem" && v >= 1e6) return v >= 1e9 ? (v / 1e9).toFixed(1) + "G" : (v / 1e6).toFixed(0) + "M";
    return String(Math.round(v * 100) / 100);
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return Number(v).toFixed(digits === undefined ? 1 : digits);
  }
  function badge(state) { return h("span", { class: "badge " + state }, state); }
  function stateLabel(state) { return state.replace(/_/g, " "); }
  function heldTotal(sc) { return (sc.held || []).reduce((a, u) => a + (u.jobs || 0), 0); }
  function rateText(rate) { // "<count>/<seconds>", as the task declared it
    const m = /^(\d+)\/(\d+(?:\.\d+)?)$/.exec(rate);
    return m ? m[1] + " per " + m[2] + " s" : rate;
  }
  function bar(frac) {
    const fill = h("span");
    fill.style.width = Math.min(100, Math.max(0, frac * 100)).toFixed(1) + "%";
    return h("div", { class: frac >= 0.9 ? "bar hot" : "bar" }, fill);
  }
  function jobLink(id) { return h("a", { href: "#/job/" + encodeURIComponent(id), class: "mono" }, id); }
  function pretty(value) { return JSON.stringify(value, null, 2); }

  // ---- pages --------------------------------------------------------------------------
  function fleetPage(el) {
    const st = app.status;
    if (!st) return;
    const live = st.nodes.filter((n) => n.state === "live");
    const slots = live.reduce((a, n) => a + n.slots, 0);
    const running = live.reduce((a, n) => a + n.running, 0);
    const t = st.jobs.total;
    const rows = st.nodes.map((n) => h("tr", { "data-node": n.id },
      h("td", {}, h("div", {}, h("a", { href: "#/jobs?node=" + encodeURIComponent(n.id), title: "Jobs on this node" }, n.name)),
        h("div", { class: "muted mono" }, n.id)),
      h("td", {}, badge(n.state)),
      h("td", { class: "num" }, ago(n.heartbeat_age)),
      h("td", {}, n.running + " / " + n.slots + " running",
        n.assigned ? " (+" + n.assigned + " assigned)" : "", bar(n.slots ? n.running / n.slots : 0)),
      h("td", {}, Object.keys(n.resources).length === 0 ? h("span", { class: "muted" }, "-") :
        Object.keys(n.resources).sort().map((k) => h("div", { class: "res" },
          k + " " + qty(k, n.used[k] || 0) + " / " + qty(k, n.resources[k]),
          bar(n.resources[k] ? (n.used[k] || 0) / n.resources[k] : 0)))),
      h("td", {}, Object.entries(n.labels).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v))),
      h("td", {}, n.queues.join(", ")),
      h("td", { class: "muted" }, (n.host || "") + (n.pid ? " pid " + n.pid : "")),
      h("td", { class: "mono" }, sessionText(n.session)),
    ));
    replace(el,
      h("h1", {}, "Fleet"),
      h("div", { class: "cards" },
        card("live nodes", live.length + " / " + st.nodes.length),
        card("slots in use", running + " / " + slots),
        card("waiting (workflows)", t.waiting || 0),
        card("pending", t.pending || 0),
        card("running", t.running || 0),
        card("held back", heldTotal(st.scheduler)),
        card("dead jobs", t.dead || 0),
        card("upstream failed", t.upstream_failed || 0),
        card("scheduler", st.scheduler.leader ? "leading" : "none"),
        card("coordinator", (st.coordinator && st.coordinator.kind) || "store")),
      st.nodes.length === 0 ? h("p", { class: "muted" }, "No worker nodes have registered yet.") :
        h("table", { id: "nodes" },
          h("thead", {}, h("tr", {}, ["node", "state", "heartbeat age", "slots", "resources (used / total)", "labels", "queues", "host", "session"].map((c) => h("th", {}, c)))),
          h("tbody", {}, rows)));
  }
  function sessionText(session) {
    if (typeof session === "string") return session;
    if (!session) return "none";
    return session.session_id + (session.load ? " (" + session.load + ")" : "");
  }
  function card(label, value) {
    return h("div", { class: "card" }, h("div", { class: "n" }, value), h("div", { class: "k" }, label));
  }

  function queuesPage(el) {
    const st = app.status;
    if (!st) return;
    const queues = Object.keys(st.jobs.by_queue).sort();
    const row = (name, counts, strong) => h("tr", {},
      h("td", {}, strong ? h("strong", {}, name) : h("a", { href: "#/jobs?queue=" + encodeURIComponent(name) }, name)),
      JOB_STATES.map((state) => h("td", { class: "num" }, (counts[state] || 0) ? h("a", {
        href: "#/jobs?state=" + state + (strong ? "" : "&queue=" + encodeURIComponent(name)),
      }, String(counts[state])) : "0")));
    replace(el, h("h1", {}, "Queues"),
      h("table", { id: "queues" },
        h("thead", {}, h("tr", {}, h("th", {}, "queue"), JOB_STATES.map((c) => h("th", { class: "num" }, stateLabel(c))))),
        h("tbody", {}, queues.map((q) => row(q, st.jobs.by_queue[q], false)), row("all queues", st.jobs.total, true))));
  }

  function schedulerPage(el) {
    const st = app.status;
    if (!st) return;
    const sc = st.scheduler;
    const items = sc.leader ? [
      ["leader", sc.leader], ["lease token", sc.token],
      ["leading since", when(sc.since) + (sc.since ? " (" + ago(st.now - sc.since) + ")" : "")],
      ["policy", sc.policy || "-"], ["placements / s", num(sc.decisions_per_s)],
      ["placed by this leader", sc.placed_total === null ? "-" : sc.placed_total],
      ["pending jobs waiting for room", sc.waiting === null ? "-" : sc.waiting],
      ["held back by limits", heldTotal(sc)],
      ["coordinator", (st.coordinator && st.coordinator.url) || "store"],
      ["coordinator session", sc.session ? (sc.session.state || "-") + (sc.session.session_id ? " " + sc.session.session_id : "") : "-"],
    ] : [["leader", "none: start `rota scheduler` or a worker with --scheduler"],
         ["coordinator", (st.coordinator && st.coordinator.url) || "store"]];
    const reasons = (id, list) => h("table", { id },
      h("thead", {}, h("tr", {}, h("th", {}, "reason"), h("th", { class: "num" }, "jobs"))),
      h("tbody", {}, list.map((u) => h("tr", {}, h("td", {}, u.reason), h("td", { class: "num" }, u.jobs)))));
    replace(el, h("h1", {}, "Scheduler"),
      h("dl", { class: "kv", id: "scheduler" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("div", { class: "pair" },
        h("section", {}, h("h2", {}, "Unplaceable jobs"),
          sc.unplaceable && sc.unplaceable.length ? reasons("unplaceable", sc.unplaceable)
            : h("p", { class: "muted" }, "None: every pending job fits some node.")),
        h("section", {}, h("h2", {}, "Held jobs (concurrency keys, rate limits)"),
          sc.held && sc.held.length ? reasons("held", sc.held)
            : h("p", { class: "muted" }, "None: no pending job is over its concurrency key's limit or its task's rate limit."))),
      h("h2", {}, "Tenants (fair share)"), tenantsPanel(sc.tenants || []),
      h("h2", {}, "Ingest processes"), ingestPanel(st.ingest || []),
      h("h2", {}, "Periodic schedules"),
      schedulesPanel(st.now));
  }

  function tenantsPanel(rows) {
    if (!rows.length) return h("p", { class: "muted", id: "tenants" }, "None: fair share is off (app.share(...), then app.sync_shares()).");
    const cols = ["tenant", "weight", "limit", "dominant share", "running", "pending"];
    return h("table", { id: "tenants" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", c === "tenant" || c === "limit" ? {} : { class: "num" }, c)))),
      h("tbody", {}, rows.map((t) => h("tr", {},
        h("td", {}, t.tenant),
        h("td", { class: "num" }, num(t.weight)),
        h("td", {}, Object.entries(t.limit || {}).map(([k, v]) => k + "=" + v).join(", ") || "-"),
        h("td", { class: "num" }, (100 * (t.dominant_share || 0)).toFixed(1) + " %"),
        h("td", { class: "num" }, t.running),
        h("td", { class: "num" }, t.pending)))));
  }

  function ingestPanel(rows) {
    if (!rows.length) return h("p", { class: "muted", id: "ingest" }, "None: `rota ingest APP --from amqp://...|kafka://...` takes jobs from a broker.");
    const cols = ["source", "state", "stored / s", "lag", "stored", "duplicates", "invalid"];
    return h("table", { id: "ingest" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((p) => h("tr", {},
        h("td", {}, p.source + " (" + p.host + "/" + p.pid + ")"),
        h("td", {}, p.stale ? "stale" : p.connected ? "connected" : "reconnecting"),
        h("td", { class: "num" }, num(p.stored_per_s)),
        h("td", { class: "num" }, p.lag === null ? "-" : p.lag),
        h("td", { class: "num" }, p.stored),
        h("td", { class: "num" }, p.duplicates),
        h("td", { class: "num" }, p.invalid + p.refused)))));
  }

  function schedulesPanel(now) {
    if (app.schedulesError && !app.schedules) {
      return h("p", { class: "muted", id: "schedules" }, "Could not load schedules: " + app.schedulesError);
    }
    const rows = app.schedules;
    if (!rows) return h("p", { class: "muted", id: "schedules" }, "Loading…");
    if (rows.length === 0) {
      return h("p", { class: "muted", id: "schedules" },
        "No periodic schedules in the store (`@app.periodic` / `app.schedule`, written by `rota worker` or `rota scheduler APP`).");
    }
    const rel = (ts) => (ts === null || ts === undefined ? "" : ts >= now ? " (in " + ago(ts - now) + ")" : " (" + ago(now - ts) + " ago)");
    return h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ["name", "task", "cron", "time zone", "missed ticks", "last tick", "next tick"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((r) => r.error !== undefined && r.error !== null
        ? h("tr", { "data-schedule": r.name }, h("td", { class: "mono" }, r.name),
          h("td", { colspan: 6, class: "error" }, "cannot read this schedule: " + r.error))
        : h("tr", { "data-schedule": r.name },
          h("td", { class: "mono" }, r.name),
          h("td", { class: "mono" }, r.task ? h("a", { href: "#/jobs?task=" + encodeURIComponent(r.task) }, r.task) : "-"),
          h("td", { class: "mono" }, r.cron),
          h("td", {}, r.tz),
          h("td", {}, r.missed === "skip" ? "skip (run if ≤ " + r.grace + " s late)" : "run once"),
          h("td", {}, r.last_tick_iso ? [h("span", { class: "mono" }, r.last_tick_iso), rel(r.last_tick)] : "none yet"),
          h("td", {}, h("span", { class: "mono" }, r.next_tick_iso), rel(r.next_tick))))));
  }

  async function loadSchedules() {
    try {
      const r = await api("/api/schedules");
      app.schedules = r.schedules;
      app.schedulesError = null;
    } catch (e) {
      app.schedulesError = e.message;
    }
  }

  // ---- charts (inline SVG) ------------------------------------------------------------
  function lineChart(title, series, opts) {
    const W = 600, H = 180, L = 44, R = 8, T = 8, B = 20;
    const now = app.status ? app.status.now : Date.now() / 1000;
    const t0 = now - WINDOW_S;
    let max = opts.max || 0;
    for (const sr of series) for (const [, v] of sr.points) if (v !== null && v > max) max = v;
    if (max <= 0) max = 1;
    max = niceMax(max);
    const x = (t) => L + ((t - t0) / WINDOW_S) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(s("line", { class: "axis", x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      svg.appendChild(s("text", { class: "tick", x: L - 4, y: y(max * f) + 3, "text-anchor": "end" }, opts.fmt(max * f)));
    }
    for (const m of [15, 10, 5, 0]) {
      svg.appendChild(s("text", { class: "tick", x: x(now - m * 60), y: H - 5, "text-anchor": m === 15 ? "start" : m === 0 ? "end" : "middle" }, m ? "-" + m + " min" : "now"));
    }
    series.forEach((sr, i) => {
      const pts = sr.points.filter(([t, v]) => v !== null && t >= t0);
      if (pts.length === 0) return;
      const d = pts.map(([t, v], j) => (j ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      svg.appendChild(s("path", { class: "line s" + (i % 8), d }));
    });
    const last = (sr) => { const p = sr.points.filter(([, v]) => v !== null); return p.length ? p[p.length - 1][1] : null; };
    return h("div", { class: "chart" }, h("h3", {}, title), svg,
      h("div", { class: "legend" }, series.map((sr, i) => h("span", {}, h("i", { class: "s" + (i % 8) }), sr.name + " " + (last(sr) === null ? "-" : opts.fmt(last(sr)))))));
  }
  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function seriesOf(name, get) { return { name, points: app.samples.map((p) => [p.t, get(p)]) }; }

  function chartsPage(el) {
    const rate = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + "/s";
    const pct = (v) => (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%";
    const count = (v) => String(Math.round(v));
    const nodeIds = new Set();
    for (const p of app.samples) for (const id of Object.keys(p.nodes)) nodeIds.add(id);
    const nodeSeries = [seriesOf("all live nodes", (p) => p.slots_total ? p.slots_used / p.slots_total : null)];
    for (const id of [...nodeIds].slice(0, 7)) {
      let name = id;
      for (const p of app.samples) if (p.nodes[id]) name = p.nodes[id].name;
      nodeSeries.push(seriesOf(name, (p) => (p.nodes[id] && p.nodes[id].slots ? p.nodes[id].running / p.nodes[id].slots : null)));
    }
    const info = app.historyInfo;
    replace(el, h("h1", {}, "Charts"),
      h("p", { class: "muted" }, "Last 15 minutes, sampled every " + (info ? info.interval : 2) +
        " s by this dashboard process. History starts when the dashboard starts" +
        (info && info.started_at ? " (" + when(info.started_at) + ")" : "") + ".",
        info && info.last_error ? " Last sampling error: " + info.last_error : ""),
      h("div", { class: "charts" },
        lineChart("Throughput (jobs finished per second)", [
          seriesOf("finished", (p) => p.finished_per_s), seriesOf("failed", (p) => p.failed_per_s),
          seriesOf("placements", (p) => p.placements_per_s)], { fmt: rate }),
        lineChart("Failure rate (dead + upstream failed, of succeeded + failed)", [seriesOf("failure rate", (p) => p.failure_rate)], { fmt: pct, max: 0.01 }),
        lineChart("Queue depth", ["pending", "scheduled", "retrying", "assigned", "running", "waiting"].map(
          (st) => seriesOf(st, (p) => p.depth[st])), { fmt: count }),
        lineChart("Node load (running / slots)", nodeSeries, { fmt: pct, max: 1 })));
  }

  // ---- jobs ---------------------------------------------------------------------------
  function routeParams() {
    const q = (app.route || "").split("?")[1] || "";
    return new URLSearchParams(q);
  }

  function jobsPage(el) {
    const params = routeParams();
    const field = (name, label, input) => h("label", {}, label, input);
    const stateSel = h("select", { name: "state" }, h("option", { value: "" }, "any"),
      JOB_STATES.map((st) => h("option", { value: st, selected: params.get("state") === st ? "selected" : null }, stateLabel(st))));
    const text = (name, ph) => h("input", { name, placeholder: ph, value: params.get(name) || "" });
    const limit = h("input", { name: "limit", type: "number", min: 1, max: 1000, value: params.get("limit") || 100 });
    const form = h("form", { class: "filters", id: "job-filters", onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(form).entries()) if (v) p.set(k, String(v));
      window.location.hash = "#/jobs?" + p.toString();
    } },
    field("state", "state", stateSel), field("task", "task", text("task", "images.resize")),
    field("queue", "queue", text("queue", "default")), field("node", "node id", text("node", "")),
    field("limit", "limit", limit), h("button", { type: "submit", class: "primary" }, "Search"),
    h("button", { type: "button", class: "danger", id: "retry-all-dead", onclick: retryAllDead }, "Retry all dead jobs"));
    const results = h("div", { id: "job-results" }, h("p", { class: "muted" }, "Loading…"));
    replace(el, h("h1", {}, "Jobs"), form, results);
    refreshJobs();
  }

  async function refreshJobs() {
    const results = document.getElementById("job-results");
    if (!results) return;
    const params = routeParams();
    const q = new URLSearchParams();
    for (const k of ["state", "task", "queue", "node", "limit"]) if (params.get(k)) q.set(k, params.get(k));
    try {
      const data = await api("/api/jobs?" + q.toString());
      if (document.getElementById("job-results") !== results) return;
      replace(results, data.jobs.length === 0 ? h("p", { class: "muted" }, "No jobs match.") :
        h("table", { id: "jobs" },
          h("thead", {}, h("tr", {}, ["id", "task", "queue", "state", "attempts", "node", "submitted", "error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, data.jobs.map((j) => h("tr", { "data-job": j.id },
            h("td", {}, jobLink(j.id)), h("td", { class: "mono" }, j.task), h("td", {}, j.queue),
            h("td", {}, badge(j.state)), h("td", { class: "num" }, j.attempts + " / " + j.max_attempts),
            h("td", { class: "mono" }, j.node_id || "-"), h("td", {}, when(j.created_at)),
            h("td", { class: "mono" }, (j.error || "").slice(0, 80)))))),
        data.jobs.length >= data.limit ? h("p", { class: "muted" }, "Showing the newest " + data.limit + " jobs.") : null);
    } catch (e) {
      replace(results, h("p", { class: "muted" }, "Could not load jobs: " + e.message));
    }
  }

  async function retryAllDead() {
    const params = routeParams();
    const body = {};
    if (params.get("queue")) body.queue = params.get("queue");
    if (params.get("task")) body.task = params.get("task");
    const scope = (body.queue ? " in queue " + body.queue : "") + (body.task ? " of task " + body.task : "");
    if (!window.confirm("Send every dead job" + scope + " back to pending?")) return;
    try {
      const r = await post("/api/jobs/retry-dead", body);
      notice(r.retried + " dead job(s) sent back to pending.");
      refreshJobs();
    } catch (e) { notice("Retry failed: " + e.message, true); }
  }

  async function jobPage(el, id) {
    let job;
    try {
      job = await api("/api/jobs/" + encodeURIComponent(id));
    } catch (e) {
      replace(el, h("h1", {}, "Job"), h("p", {}, "Could not load job " + id + ": " + e.message));
      return;
    }
    if (app.route !== "job/" + id) return;
    app.jobLive = !FINAL.has(job.state); // refresh it with the rest while it can change
    const actions = h("div", { class: "actions" });
    if (job.state === "dead") {
      actions.appendChild(h("button", { class: "primary", id: "retry-job", onclick: () => act("retry") }, "Retry"));
    }
    if (!FINAL.has(job.state)) {
      actions.appendChild(h("button", { class: "danger", id: "cancel-job", onclick: () => act("cancel") },
        job.cancel_requested ? "Cancel requested" : "Cancel"));
    }
    async function act(what) {
      app.jobBusy = true;
      for (const b of actions.querySelectorAll("button")) b.disabled = true;
      try {
        const r = await post("/api/jobs/" + encodeURIComponent(id) + "/" + what);
        notice(what === "retry" ? "Job sent back to pending." : "Job is now " + r.state + ".");
      } catch (e) { notice(what + " failed: " + e.message, true); }
      await jobPage(el, id);
      app.jobBusy = false;
    }
    const t = job.timings || {};
    const rows = [
      ["id", h("span", { class: "mono", id: "job-id" }, job.id)],
      ["state", h("span", { id: "job-state" }, badge(job.state), job.cancel_requested ? " (cancel requested)" : "")],
      ["task", h("span", { class: "mono" }, job.task)], ["queue", job.queue], ["priority", job.priority],
      ["attempts", job.attempts + " of " + job.max_attempts],
      ["node", job.node_id ? h("a", { href: "#/jobs?node=" + encodeURIComponent(job.node_id), class: "mono" }, job.node_id) : "-"],
      ["fencing token", job.token],
      ["timeout", job.timeout === null ? "none" : job.timeout + " s"],
      ["resources", Object.keys(job.resources).length ? Object.entries(job.resources).map(([k, v]) => h("span", { class: "chip" }, k + "=" + qty(k, v))) : "-"],
      ["labels", Object.keys(job.labels).length ? Object.entries(job.labels).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v)) : "-"],
      ["affinity", Object.keys(job.affinity).length ? Object.entries(job.affinity).map(([k, v]) => h("span", { class: "chip" }, k + "=" + v)) : "-"],
      ["submitted", when(job.created_at)],
      ["scheduled for", when(job.scheduled_at)],
      ["started", when(job.started_at) + (t.waited !== null && t.waited !== undefined ? " (waited " + ago(t.waited) + ")" : "")],
      ["finished", when(job.finished_at) + (t.ran !== null && t.ran !== undefined ? " (ran " + ago(t.ran) + ")" : "")],
      ["lease expires", when(job.lease_expires_at)],
    ];
    rows.splice(6, 0, ...flowRows(job));
    replace(el,
      h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
      h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)),
      actions,
      h("dl", { class: "kv", id: "job" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h2", {}, "Arguments"), job.payload_ok === false ? h("p", { class: "muted" }, "The stored payload cannot be decoded.") : null,
      h("pre", { id: "job-args" }, pretty({ args: job.args, kwargs: job.kwargs })),
      job.result !== null ? [h("h2", {}, "Result"), h("pre", { id: "job-result" }, pretty(job.result))] : null,
      job.error ? [h("h2", {}, "Error"), h("pre", { id: "job-error" }, job.error)] : null,
      job.traceback ? [h("h2", {}, "Traceback"), h("pre", { id: "job-traceback" }, job.traceback)] : null,
      attemptsTable(job.attempt_history || []));
  }

  // The job's attempt history, oldest first: node, start, duration, outcome, how it was cut
  // short, error; a traceback opens under its row.
  function attemptsTable(attempts) {
    if (!attempts.length) return null;
    const rows = attempts.map((a) => [
      h("tr", { "data-token": String(a.token) },
        h("td", {}, String(a.attempt)),
        h("td", { class: "mono" }, a.node_id || "-"),
        h("td", {}, when(a.started_at)),
        h("td", {}, a.ended_at === null ? "running" : ago(a.ended_at - a.started_at)),
        h("td", {}, a.outcome ? badge(a.outcome) : "-"),
        h("td", {}, a.cut_short || "-"),
        h("td", { class: "mono" }, a.error || "")),
      a.traceback ? h("tr", {}, h("td", { colspan: "7" },
        h("details", {}, h("summary", {}, "traceback"), h("pre", {}, a.traceback)))) : null,
    ]);
    return [h("h2", {}, "Attempts"),
      h("table", { id: "job-attempts" },
        h("thead", {}, h("tr", {}, ["#", "node", "started", "took", "outcome", "cut short", "error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows))];
  }

  // Workflow and flow-control fields, only those that are set.
  function flowRows(job) {
    const rows = [];
    const deps = job.depends_on || [];
    if (deps.length) {
      const known = new Map((job.parents || []).map((p) => [p.id, p]));
      const shown = deps.slice(0, MAX_PARENTS_SHOWN).map((pid) => {
        const p = known.get(pid);
        return h("div", { class: "parent", "data-parent": pid }, jobLink(pid), " ",
          p && p.state ? badge(p.state) : h("span", { class: "muted" }, "(no longer stored)"),
          p && p.task ? h("span", { class: "muted mono" }, " " + p.task) : null);
      });
      if (deps.length > MAX_PARENTS_SHOWN) shown.push(h("div", { class: "muted" }, "and " + (deps.length - MAX_PARENTS_SHOWN) + " more"));
      rows.push(["parents (" + deps.length + ")", h("div", { id: "job-parents" }, shown)]);
      if (job.pass_results) rows.push(["parents' results", "passed as its first argument"]);
    }
    if (job.workflow_id) rows.push(["workflow", h("span", { class: "mono", id: "job-workflow" }, job.workflow_id)]);
    if (job.unique_key) rows.push(["unique key", h("span", { class: "mono", id: "job-unique-key" }, job.unique_key)]);
    if (job.concurrency_key) {
      rows.push(["concurrency key", h("span", { id: "job-concurrency" }, h("span", { class: "mono" }, job.concurrency_key),
        job.concurrency_limit ? " (at most " + job.concurrency_limit + " assigned or running)" : " (no limit)")]);
    }
    if (job.rate_limit) rows.push(["rate limit", h("span", { id: "job-rate-limit" }, rateText(job.rate_limit), " (task-wide, across the fleet)")]);
    return rows;
  }

  // ---- router and refresh -------------------------------------------------------------
  const LIVE_PAGES = { fleet: fleetPage, queues: queuesPage, charts: chartsPage, scheduler: schedulerPage };

  function currentRoute() { return (window.location.hash || "#/fleet").replace(/^#\/?/, "") || "fleet"; }
  function currentPage() { return currentRoute().split("?")[0].split("/")[0]; }

  function render() {
    const route = currentRoute();
    const changed = route !== app.route;
    app.route = route;
    const page = route.split("?")[0].split("/")[0];
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page || (page === "job" && a.dataset.page === "jobs"));
    const el = view();
    if (LIVE_PAGES[page]) LIVE_PAGES[page](el);
    else if (page === "jobs") { if (changed) jobsPage(el); else refreshJobs(); }
    else if (page === "job") {
      if (changed || (app.jobLive && !app.jobBusy)) jobPage(el, decodeURIComponent(route.slice(4).split("?")[0]));
    }
    else replace(el, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/fleet" }, "Fleet")));
  }

  async function refresh() {
    try {
      const last = app.samples.length ? app.samples[app.samples.length - 1].t : null;
      const [status, history] = await Promise.all([
        api("/api/status"),
        api("/api/history" + (last !== null ? "?since=" + last : "")),
        currentPage() === "scheduler" ? loadSchedules() : null,
      ]);
      app.status = status;
      app.historyInfo = history;
      app.samples = app.samples.concat(history.samples);
      const cutoff = status.now - WINDOW_S - 60;
      while (app.samples.length && app.samples[0].t < cutoff) app.samples.shift();
      app.lastOk = Date.now();
      document.getElementById("live").classList.remove("stale");
      render();
    } catch (e) {
      document.getElementById("live").classList.add("stale");
      document.getElementById("live").title = "Update failed: " + e.message;
    }
  }

  async function start() {
    app.session = await api("/api/session");
    document.getElementById("store").textContent = app.session.store;
    const logout = document.getElementById("logout");
    logout.hidden = app.session.auth !== "cookie";
    logout.addEventListener("click", async () => {
      try { await post("/logout"); } finally { window.location.assign("/login"); }
    });
    window.addEventListener("hashchange", () => {
      notice("");
      render();
      if (currentPage() === "scheduler") loadSchedules().then(() => { if (currentPage() === "scheduler") render(); });
    });
    await refresh();
    app.timer = window.setInterval(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((e) => notice("Cannot start: " + e.message, true));
  });
})();
