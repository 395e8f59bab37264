/* flightlog dashboard (flightlog ui) and report (flightlog report): one page, hash routes.
   #/runs, #/run/<id>, #/compare?runs=a,b&metric=E&group_by=params.x&tol=1e-8
   Served: data from /api/... (polled for live runs). Report: window.FL_EMBED holds the same
   answers, keyed by request. Text is always set with textContent, never parsed as HTML. */
(function () {
  "use strict";
  const CFG = window.FL_CONFIG || {};
  const EMBED = window.FL_EMBED || null;
  const SERVED = !EMBED;
  const PHASES = CFG.phase_colors || { RED: "#d62728", AMBER: "#ffa600", GREEN: "#2ca02c" };
  const COLORS = CFG.curve_colors || ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"];
  const app = document.getElementById("app");
  let timers = [];
  let charts = [];

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(+v.toPrecision(6));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  // Axis ticks: short (1e-12, 2.5e+6, 0.25), never clipped by the axis width.
  function tick(v) {
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) {
      const e = v.toExponential(2).replace(/\.?0+e/, "e");
      return e;
    }
    return String(+v.toPrecision(4));
  }
  function statusBadge(s) { return h("span", { class: "status status-" + s }, s); }
  function key(kind, a) {
    if (kind === "runs") return "runs";
    if (kind === "run") return "run/" + a.id;
    if (kind === "series") return "series/" + a.id + "/" + a.metric;
    if (kind === "compare") return "compare/" + (a.metric || "");
    throw new Error("unknown request " + kind);
  }
  async function api(kind, a) {
    a = a || {};
    if (EMBED) {
      const k = key(kind, a);
      if (!(k in EMBED)) throw new Error("this report does not hold " + k + " (make it with --metric " + (a.metric || "") + ")");
      return EMBED[k];
    }
    let url;
    const q = new URLSearchParams();
    if (kind === "runs") { url = "api/runs"; for (const [k, v] of Object.entries(a)) if (v !== "" && v !== null && v !== undefined) q.set(k, v); }
    else if (kind === "run") url = "api/run/" + encodeURIComponent(a.id);
    else if (kind === "series") {
      url = "api/run/" + encodeURIComponent(a.id) + "/series"; q.set("metric", a.metric);
      if (a.x_min !== undefined) q.set("x_min", a.x_min);
      if (a.x_max !== undefined) q.set("x_max", a.x_max);
      if (a.buckets) q.set("buckets", a.buckets);
    } else if (kind === "compare") {
      url = "api/compare"; q.set("runs", a.runs.join(",")); q.set("metric", a.metric || "E");
      if (a.group_by) q.set("group_by", a.group_by);
      if (a.tol) q.set("tol", a.tol);
    }
    const qs = q.toString();
    const r = await fetch(url + (qs ? "?" + qs : ""), { cache: "no-store" });
    let body;
    try { body = await r.json(); } catch (e) { throw new Error("HTTP " + r.status); }
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  }
  function every(ms, fn) { if (SERVED) timers.push(setInterval(fn, ms)); }
  function clearPage() {
    timers.forEach(clearInterval); timers = [];
    charts.forEach((c) => c.destroy()); charts = [];
    app.replaceChildren();
  }
  function showError(where, e) { where.append(h("div", { class: "error" }, String(e.message || e))); }
  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    return { parts: path.split("/").map(decodeURIComponent), q: new URLSearchParams(query || "") };
  }
  function table(columns, rows, opts) {
    opts = opts || {};
    const thead = h("tr", {}, columns.map((c) => {
      const th = h("th", { class: (opts.onSort ? "sortable" : "") + (opts.sort === c ? " sorted" + (opts.desc ? "" : " asc") : ""), "data-col": c }, opts.label ? opts.label(c) : c);
      if (opts.onSort) th.addEventListener("click", () => opts.onSort(c));
      return th;
    }));
    const body = rows.map((r) => h("tr", {}, columns.map((c, i) => {
      const v = Array.isArray(r) ? r[i] : r[c];
      const cell = opts.cell ? opts.cell(c, v, r) : fmt(v);
      return h("td", { class: typeof v === "number" ? "num" : "" }, cell);
    })));
    return h("div", { class: "scroll" }, h("table", { class: "grid" + (opts.cls ? " " + opts.cls : "") }, h("thead", {}, thead), h("tbody", {}, body)));
  }

  // ------------------------------------------------------------------ charts
  // One uPlot chart: series [{label, x, y, color}], phase bands and event markers drawn as
  // elements over the plot area (visible, hoverable, and countable by the browser tests).
  function chart(el, series, o) {
    const width = Math.max(320, el.clientWidth - 16);
    const logy = !!o.logy;
    let data;
    const clean = (ys) => (logy ? ys.map((y) => (y !== null && y > 0 ? y : null)) : ys);
    if (series.length === 1) data = [series[0].x, clean(series[0].y)];
    else data = uPlot.join(series.map((s) => [s.x, clean(s.y)]));
    const overlay = (u) => {
      let layer = u.over.querySelector(".fl-layer");
      if (!layer) { layer = h("div", { class: "fl-layer" }); u.over.append(layer); }
      layer.replaceChildren();
      const [x0, x1] = [u.scales.x.min, u.scales.x.max];
      for (const [a, b, p] of o.phases || []) {
        if (b < x0 || a > x1) continue;
        const l = u.valToPos(Math.max(a, x0), "x"), r = u.valToPos(Math.min(b, x1), "x");
        layer.append(h("div", { class: "phase-band phase-" + p, title: p + " " + fmt(a) + " .. " + fmt(b), style: "left:" + l + "px;width:" + Math.max(1, r - l) + "px" }));
      }
      for (const [ex, ey, name, payload] of o.events || []) {
        if (ex < x0 || ex > x1) continue;
        let top = 6;
        if (ey !== null && (!logy || ey > 0)) top = Math.min(Math.max(u.valToPos(ey, "y"), 0), u.over.clientHeight);
        layer.append(h("div", { class: "event-marker ev-" + name, title: name + " at iter " + fmt(ex) + "\n" + (payload || ""), style: "left:" + u.valToPos(ex, "x") + "px;top:" + top + "px" }));
      }
    };
    const opts = {
      width, height: o.height || 260,
      scales: { x: { time: false }, y: logy ? { distr: 3 } : {} },
      axes: [{ label: o.xlabel || "iter", values: (u, vals) => vals.map(tick) }, { size: 64, values: (u, vals) => vals.map(tick) }],
      series: [{ label: "iter", value: (u, v) => fmt(v) }].concat(series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: true, value: (u, v) => fmt(v) }))),
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { draw: [overlay], setScale: [(u, k) => { if (k === "x" && o.onZoom) o.onZoom(u); }] },
    };
    el.setAttribute("data-scale", logy ? "log" : "linear");
    const u = new uPlot(opts, data, el);
    u.flLog = logy;
    charts.push(u);
    return u;
  }

  // ------------------------------------------------------------------ runs page
  const runsState = { sort: "started", desc: true, offset: 0, limit: 100, flow: "", status: "", param: "", q: "", selected: new Set() };
  async function pageRuns() {
    const st = runsState;
    const box = h("div", { id: "runs-page" });
    app.append(h("h2", {}, "Runs"), box);
    const controls = h("div", { class: "controls" });
    const tableBox = h("div", { id: "runs-table" });
    const pager = h("div", { class: "pager" });
    const compareBtn = h("button", { class: "primary", id: "compare-selected", disabled: true, onclick: () => {
      location.hash = "#/compare?runs=" + [...st.selected].map(encodeURIComponent).join(",");
    } }, "Compare selected");
    box.append(controls, tableBox, pager);
    let first = true;
    async function load() {
      let d;
      try {
        d = await api("runs", SERVED ? { flow: st.flow, status: st.status, param: st.param, q: st.q, sort: st.sort, desc: st.desc ? 1 : 0, offset: st.offset, limit: st.limit } : {});
      } catch (e) { tableBox.replaceChildren(); showError(tableBox, e); return; }
      if (!SERVED) d = filterLocal(d);
      if (first) { buildControls(d); first = false; }
      if (!d.all) {
        tableBox.replaceChildren(h("div", { class: "empty", id: "empty-state" }, "No runs under " + d.root + " yet. Record one (see the README), or run `flightlog demo`."));
        pager.replaceChildren();
        return;
      }
      const cols = ["", ...d.columns];
      tableBox.replaceChildren(table(cols, d.rows, {
        sort: st.sort, desc: st.desc,
        label: (c) => c.replace(/^params\./, ""),
        onSort: (c) => { if (!c) return; if (st.sort === c) st.desc = !st.desc; else { st.sort = c; st.desc = false; } st.offset = 0; load(); },
        cell: (c, v, r) => {
          if (c === "") {
            const cb = h("input", { type: "checkbox", class: "select-run", "data-run": r.run_id, checked: st.selected.has(r.run_id) });
            cb.addEventListener("change", () => { cb.checked ? st.selected.add(r.run_id) : st.selected.delete(r.run_id); compareBtn.disabled = st.selected.size < 1; });
            return cb;
          }
          if (c === "run_id") return h("a", { href: "#/run/" + encodeURIComponent(v), class: "run-link" }, v);
          if (c === "status") return statusBadge(v);
          if (c === "started" && v) return v.replace("T", " ").slice(0, 19);
          return fmt(v);
        },
      }));
      tableBox.querySelector("table").id = "runs";
      const end = Math.min(d.offset + d.rows.length, d.total);
      pager.replaceChildren(
        h("button", { disabled: d.offset === 0, onclick: () => { st.offset = Math.max(0, st.offset - st.limit); load(); } }, "< prev"),
        h("span", { class: "muted", id: "runs-count" }, (d.total ? d.offset + 1 : 0) + "\u2013" + end + " of " + d.total + (d.total !== d.all ? " (" + d.all + " in all)" : "")),
        h("button", { disabled: end >= d.total, onclick: () => { st.offset += st.limit; load(); } }, "next >"),
        compareBtn,
      );
      compareBtn.disabled = st.selected.size < 1;
    }
    function filterLocal(d) { return d; }
    function buildControls(d) {
      if (!SERVED) { controls.append(h("span", { class: "muted" }, "Report of " + d.rows.length + " run(s) under " + d.root)); return; }
      const sel = (name, values) => {
        const s = h("select", { name, id: "filter-" + name }, h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: st[name] === v }, v)));
        s.addEventListener("change", () => { st[name] = s.value; st.offset = 0; load(); });
        return h("label", {}, name + " ", s);
      };
      const txt = (name, ph) => {
        const i = h("input", { name, id: "filter-" + name, placeholder: ph, value: st[name], size: 18 });
        i.addEventListener("change", () => { st[name] = i.value; st.offset = 0; load(); });
        return h("label", {}, name + " ", i);
      };
      controls.append(sel("flow", d.flows), sel("status", ["running", "finished", "failed", "crashed"]), txt("param", "name=value"), txt("q", "run id or flow"));
    }
    await load();
    every(2000, load);
  }

  // ------------------------------------------------------------------ run page
  async function pageRun(id) {
    let run;
    try { run = await api("run", { id }); } catch (e) { showError(app, e); return; }
    const head = h("div", { id: "run-head" });
    const fillHead = (r) => head.replaceChildren(
      h("h2", {}, "Run ", h("span", { id: "run-id" }, r.run_id), " ", statusBadge(r.status)),
      h("div", { class: "muted" }, "flow ", r.flow_name || "", " \u00b7 ", h("span", { id: "run-rows" }, String(r.rows)), " rows \u00b7 from the ", r.source === "catalog" ? "catalog" : "durable files", " \u00b7 ", r.location),
    );
    fillHead(run);
    let logy = true;
    const logBox = h("input", { type: "checkbox", id: "log-toggle", checked: logy });
    const controls = h("div", { class: "controls" }, h("label", {}, logBox, " log y"), h("span", { class: "muted" }, "drag to zoom, double-click to reset; hover for values"),
      h("span", { class: "legend-phases" }, Object.entries(PHASES).map(([p, c]) => h("span", { style: "background:" + c + "33" }, p))));
    const grid = h("div", { class: "charts", id: "charts" });
    app.append(head, controls, grid);
    const boxes = {};
    const data = {};
    if (!run.metrics.length) grid.append(h("div", { class: "empty" }, run.rows ? "No numeric fields to chart." : "No durable rows yet: the charts appear with the first segment."));
    function draw(metric) {
      const b = boxes[metric], s = data[metric];
      if (!b || !s) return;
      const old = charts.indexOf(b.u);
      if (b.u) { b.u.destroy(); charts.splice(old, 1); }
      b.plot.replaceChildren();
      const canLog = logy && s.y.some((y) => y !== null && y > 0);
      b.note.textContent = s.rows + " rows, " + s.points + " points drawn" + (logy && !canLog ? " (no positive values: linear)" : "");
      b.u = chart(b.plot, [{ label: metric, x: s.x, y: s.y, color: COLORS[0] }], {
        logy: canLog, phases: s.phases, events: s.events,
        onZoom: SERVED ? (u) => zoomed(metric, u) : null,
      });
    }
    let zoomTimer = null;
    function zoomed(metric, u) {
      const s = data[metric];
      if (!s || !s.x.length) return;
      const full = u.scales.x.min <= s.x[0] && u.scales.x.max >= s.x[s.x.length - 1];
      if (full || s.rows <= s.points) return; // every row is drawn already
      clearTimeout(zoomTimer);
      zoomTimer = setTimeout(async () => {
        const [lo, hi] = [u.scales.x.min, u.scales.x.max];
        try {
          const z = await api("series", { id, metric, x_min: lo, x_max: hi });
          if (z.x.length) u.setData([z.x, z.y.map((y) => (u.flLog && !(y > 0) ? null : y))], false);
        } catch (e) { /* the chart keeps its overview */ }
      }, 250);
    }
    async function loadSeries(metric) {
      try { data[metric] = await api("series", { id, metric }); draw(metric); boxes[metric].box.setAttribute("data-ready", "1"); }
      catch (e) { showError(boxes[metric].box, e); }
    }
    for (const m of run.metrics) {
      const box = h("div", { class: "chart", "data-metric": m });
      const note = h("div", { class: "note" });
      const plot = h("div", { class: "plot" });
      const unit = ((run.manifest.units || {})[m] || {});
      box.append(h("div", { class: "title" }, m, unit.unit && unit.unit !== "1" ? " [" + unit.unit + "]" : ""));
      if (unit.method) box.append(h("div", { class: "note" }, unit.method));
      box.append(plot, note);
      grid.append(box);
      boxes[m] = { box, plot, note, u: null };
    }
    // The first chart comes first (time to first chart); the others follow.
    for (const m of run.metrics) await loadSeries(m);
    logBox.addEventListener("change", () => { logy = logBox.checked; run.metrics.forEach(draw); });
    app.append(manifestView(run), eventsView(run));
    if (run.status === "running") {
      every(1000, async () => {
        let r;
        try { r = await api("run", { id }); } catch (e) { return; }
        fillHead(r);
        for (const m of r.metrics) {
          if (!boxes[m]) continue;
          try {
            const s = await api("series", { id, metric: m });
            const b = boxes[m];
            const zoomed = b.u && data[m] && data[m].x.length && (b.u.scales.x.min > data[m].x[0] || b.u.scales.x.max < data[m].x[data[m].x.length - 1]);
            data[m] = s;
            if (!zoomed) draw(m);
          } catch (e) { /* next tick */ }
        }
        if (r.status !== "running") { timers.forEach(clearInterval); timers = []; }
      });
    }
  }
  function kvTable(obj, id) {
    const rows = Object.entries(obj || {}).map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : v]);
    if (!rows.length) return h("div", { class: "muted" }, "(none)");
    const t = table(["name", "value"], rows, { cls: "kv" });
    if (id) t.querySelector("table").id = id;
    return t;
  }
  function manifestView(run) {
    const m = run.manifest || {};
    const units = Object.fromEntries(Object.entries(m.units || {}).map(([k, u]) => [k, typeof u === "object" ? [u.unit, u.method].filter(Boolean).join(" \u2014 ") : u]));
    const counts = Object.assign({}, m.counts || {}, m.cost || {}, m.sampling ? { sampling: m.sampling } : {});
    const top = {};
    for (const k of ["run_id", "flow_name", "mode", "status", "created_at", "finished_at", "error_type", "error_message", "trial_id"]) if (m[k] !== undefined) top[k] = m[k];
    return h("div", { id: "manifest" }, h("h3", {}, "Manifest"), h("div", { class: "two" },
      h("div", {}, h("h3", {}, "Run"), kvTable(top)),
      h("div", {}, h("h3", {}, "Params"), kvTable(m.params, "params")),
      h("div", {}, h("h3", {}, "Units and methods"), kvTable(units, "units")),
      h("div", {}, h("h3", {}, "Recorder (dropped, sampled, lost, stalls)"), kvTable(counts, "recorder")),
      h("div", {}, h("h3", {}, "Provenance"), kvTable(m.provenance, "provenance")),
      m.tags ? h("div", {}, h("h3", {}, "Tags"), kvTable(m.tags)) : null));
  }
  function eventsView(run) {
    const cols = ["t_wall_ms", "iter", "event", "payload"];
    const more = run.events_total > run.events.length ? " (first " + run.events.length + " of " + run.events_total + ")" : "";
    const t = run.events.length ? table(cols, run.events) : h("div", { class: "muted" }, "(no events)");
    if (run.events.length) t.querySelector("table").id = "events";
    return h("div", {}, h("h3", {}, "Events" + more), t);
  }

  // ------------------------------------------------------------------ compare page
  async function pageCompare(q) {
    const ids = (q.get("runs") || "").split(",").filter(Boolean);
    let metric = q.get("metric") || CFG.metric || "E";
    const groupBy = q.get("group_by") || "";
    const tol = q.get("tol") || "";
    app.append(h("h2", {}, "Compare ", String(ids.length), " runs"));
    if (!ids.length) { app.append(h("div", { class: "empty" }, "Select runs on the runs page to compare them.")); return; }
    const infos = [];
    for (const id of ids) {
      try { infos.push(await api("run", { id })); } catch (e) { showError(app, e); return; }
    }
    const metrics = [...new Set(infos.flatMap((r) => r.metrics))];
    if (!metrics.includes(metric) && metrics.length) metric = metrics[0];
    const go = (m, g, t) => { location.hash = "#/compare?runs=" + ids.map(encodeURIComponent).join(",") + "&metric=" + encodeURIComponent(m) + (g ? "&group_by=" + encodeURIComponent(g) : "") + (t ? "&tol=" + encodeURIComponent(t) : ""); };
    const msel = h("select", { id: "compare-metric" }, metrics.map((m) => h("option", { value: m, selected: m === metric }, m)));
    const params = [...new Set(infos.flatMap((r) => Object.keys((r.manifest || {}).params || {})))];
    const gsel = h("select", { id: "group-by" }, h("option", { value: "" }, "(per run)"), params.map((p) => h("option", { value: "params." + p, selected: "params." + p === groupBy }, p)));
    const tolIn = h("input", { id: "tol", size: 8, value: tol, placeholder: "1e-8" });
    let logy = true;
    const logBox = h("input", { type: "checkbox", id: "log-toggle", checked: logy });
    if (SERVED) {
      msel.addEventListener("change", () => go(msel.value, gsel.value, tolIn.value));
      gsel.addEventListener("change", () => go(msel.value, gsel.value, tolIn.value));
      tolIn.addEventListener("change", () => go(msel.value, gsel.value, tolIn.value));
      app.append(h("div", { class: "controls" }, h("label", {}, "metric ", msel), h("label", {}, "group by ", gsel), h("label", {}, "tol ", tolIn), h("label", {}, logBox, " log y")));
    } else {
      msel.addEventListener("change", () => { metric = msel.value; drawAll(); });
      app.append(h("div", { class: "controls" }, h("label", {}, "metric ", msel), h("label", {}, logBox, " log y")));
    }
    const box = h("div", { class: "chart", id: "compare-chart" });
    const plot = h("div", { class: "plot" });
    box.append(h("div", { class: "title" }, metric + " by iter"), plot);
    const tables = h("div", { id: "compare-tables" });
    app.append(box, tables);
    let u = null;
    async function drawAll() {
      box.querySelector(".title").textContent = metric + " by iter";
      const series = [];
      for (let i = 0; i < ids.length; i++) {
        try {
          const s = await api("series", { id: ids[i], metric });
          series.push({ label: ids[i] + " [" + infos[i].status + "]", x: s.x, y: s.y, color: COLORS[i % COLORS.length] });
        } catch (e) { showError(box, e); }
      }
      if (u) { charts.splice(charts.indexOf(u), 1); u.destroy(); }
      plot.replaceChildren();
      const canLog = logy && series.some((s) => s.y.some((y) => y !== null && y > 0));
      if (series.length) u = chart(plot, series, { logy: canLog, height: 380 });
      box.setAttribute("data-series", String(series.length));
      box.setAttribute("data-ready", "1");
      let cmp;
      try { cmp = await api("compare", { runs: ids, metric, group_by: groupBy, tol }); } catch (e) { tables.replaceChildren(); showError(tables, e); return; }
      tables.replaceChildren();
      if (cmp.not_in_catalog.length) tables.append(h("div", { class: "muted" }, "Not consolidated yet (no summary): " + cmp.not_in_catalog.join(", ")));
      if (cmp.rows.length) {
        const keep = cmp.columns.map((c, i) => [c, i]).filter(([c]) => !c.startsWith("delta_") || c === "delta_min");
        const t = table(keep.map(([c]) => c), cmp.rows.map((r) => keep.map(([, i]) => r[i])));
        t.querySelector("table").id = "compare-table";
        tables.append(h("h3", {}, "Per run"), t);
      }
      if (cmp.group_rows.length) {
        const t = table(cmp.group_columns, cmp.group_rows);
        t.querySelector("table").id = "group-table";
        tables.append(h("h3", {}, "Grouped by " + cmp.group_by + " (mean, std, bootstrap 95% interval)"), t, groupChart(cmp));
      }
    }
    logBox.addEventListener("change", () => { logy = logBox.checked; drawAll(); });
    await drawAll();
  }
  // Final value per group: mean and its bootstrap 95% interval, on a log axis when all positive.
  function groupChart(cmp) {
    const c = cmp.group_columns, rows = cmp.group_rows;
    const at = (n) => c.indexOf(n);
    const pts = rows.map((r) => ({ k: fmt(r[0]), m: r[at("final_mean")], lo: r[at("final_ci95_lo")], hi: r[at("final_ci95_hi")] })).filter((p) => p.m !== null);
    if (!pts.length) return h("div");
    const vals = pts.flatMap((p) => [p.m, p.lo, p.hi]).filter((v) => v !== null);
    const log = vals.every((v) => v > 0);
    const tr = (v) => (log ? Math.log10(v) : v);
    let lo = Math.min(...vals.map(tr)), hi = Math.max(...vals.map(tr));
    if (hi === lo) { hi += 1; lo -= 1; }
    const W = 520, H = 40 + 34 * pts.length, L = 120, R = 20;
    const X = (v) => L + (tr(v) - lo) / (hi - lo) * (W - L - R);
    const NS = "http://www.w3.org/2000/svg";
    const s = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; };
    const svg = s("svg", { width: W, height: H, class: "groups", id: "group-chart" });
    svg.append(s("text", { x: L, y: 14 }, "final " + cmp.metric + ": mean and 95% interval" + (log ? " (log scale)" : "")));
    pts.forEach((p, i) => {
      const y = 36 + i * 34;
      svg.append(s("text", { x: 4, y: y + 4 }, cmp.group_by.replace(/^params\./, "") + "=" + p.k));
      if (p.lo !== null && p.hi !== null) svg.append(s("line", { x1: X(p.lo), x2: X(p.hi), y1: y, y2: y, stroke: "#333", "stroke-width": 2 }));
      svg.append(s("circle", { cx: X(p.m), cy: y, r: 5, fill: COLORS[i % COLORS.length] }));
      svg.append(s("text", { x: X(p.m) + 8, y: y - 8 }, fmt(p.m)));
    });
    return svg;
  }

  // ------------------------------------------------------------------ router
  async function route() {
    clearPage();
    const { parts, q } = parseHash();
    try {
      if (parts[0] === "run" && parts[1]) await pageRun(parts[1]);
      else if (parts[0] === "compare") await pageCompare(q);
      else await pageRuns();
    } catch (e) { showError(app, e); }
    document.body.setAttribute("data-page", parts[0] || "runs");
  }
  window.addEventListener("hashchange", route);
  if (!location.hash && CFG.start) location.hash = CFG.start;
  route();
})();
