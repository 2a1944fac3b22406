// glm-gateway dashboard: polls GET /dashboard/data and draws canvas charts. No libraries.
(function () {
  "use strict";

  const POLL_MS = 2000;
  const KEY_STORE = "glm-gateway-master-key";
  const AUTH_ON = document.querySelector('meta[name="glm-auth"]').content === "on";
  const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf",
    "#ff9bce", "#8492a3"];
  const $ = (id) => document.getElementById(id);

  let timer = null;
  let last = null;

  // ---- formatting -------------------------------------------------------------------------
  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    if (v >= 10) return v.toFixed(0) + " ms";
    return v.toFixed(2) + " ms";
  }
  function fmtPct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function fmtUsd(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    if (v < 0.01) return "$" + v.toFixed(5);
    return "$" + v.toFixed(v < 10 ? 3 : 2);
  }
  function fmtTime(epoch) {
    const d = new Date(epoch * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map((n) => String(n).padStart(2, "0")).join(":");
  }
  function fmtDuration(s) {
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  // ---- charts -------------------------------------------------------------------------------
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function setupCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth);
    const h = Math.max(50, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function drawAxes(ctx, box, t, yMax, fmt) {
    ctx.strokeStyle = "#263140";
    ctx.fillStyle = "#8492a3";
    ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = box.top + box.h - (i / 4) * box.h;
      ctx.beginPath();
      ctx.moveTo(box.left, Math.round(y) + 0.5);
      ctx.lineTo(box.left + box.w, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(fmt((yMax * i) / 4), box.left - 6, y);
    }
    ctx.textBaseline = "top";
    const marks = [[0, "left"], [Math.floor((t.length - 1) / 2), "center"], [t.length - 1, "right"]];
    for (const [i, align] of marks) {
      if (t[i] === undefined) continue;
      ctx.textAlign = align;
      ctx.fillText(fmtTime(t[i]), box.left + (i / Math.max(1, t.length - 1)) * box.w, box.top + box.h + 5);
    }
  }

  function drawLine(ctx, box, values, yMax, color) {
    const missing = (v) => v === null || v === undefined;
    const n = Math.max(1, values.length - 1);
    const at = (v, i) => [box.left + (i / n) * box.w, box.top + box.h - Math.min(1, v / yMax) * box.h];
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    let pen = false;
    values.forEach((v, i) => {
      if (missing(v)) { pen = false; return; }
      const [x, y] = at(v, i);
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
    values.forEach((v, i) => {  // a point with no neighbour draws no line: mark it
      if (missing(v) || !missing(values[i - 1]) || !missing(values[i + 1])) return;
      const [x, y] = at(v, i);
      ctx.beginPath();
      ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
  }

  function renderLegend(el, series) {
    el.replaceChildren(...series.map((s) => {
      const item = document.createElement("span");
      item.className = "item";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = s.color;
      const label = document.createElement("span");
      const now = s.values.length ? s.values[s.values.length - 1] : null;
      label.textContent = s.name + (s.fmt ? " " + s.fmt(now) : "");
      item.append(sw, label);
      return item;
    }));
  }

  // series: [{name, values, color?}]; fmt formats y values.
  function lineChart(name, t, series, fmt, minMax) {
    const canvas = $("c-" + name);
    const { ctx, w, h } = setupCanvas(canvas);
    const box = { left: 58, top: 8, w: w - 68, h: h - 30 };
    let max = 0;
    let points = 0;
    series.forEach((s, i) => {
      s.color = s.color || PALETTE[i % PALETTE.length];
      for (const v of s.values) {
        if (v === null || v === undefined) continue;
        points += 1;
        if (v > max) max = v;
      }
    });
    const yMax = niceMax(Math.max(max, minMax || 0));
    drawAxes(ctx, box, t, yMax, fmt);
    series.forEach((s) => drawLine(ctx, box, s.values, yMax, s.color));
    canvas.dataset.points = String(points);
    canvas.dataset.max = String(max);
    renderLegend($("l-" + name), series.map((s) => ({ ...s, fmt: s.legendFmt })));
  }

  function breakdown(map, scale) {
    return Object.keys(map).map((name) => ({
      name, values: map[name].map((v) => v * (scale || 1)), legendFmt: fmtNum,
    }));
  }

  function drawCharts(d) {
    const s = d.series;
    const t = s.t;
    const pct = (a) => a.map((v) => v * 100);
    lineChart("rps", t, [
      { name: "requests", values: s.rps, legendFmt: fmtNum },
      { name: "5xx", values: s.errors_ps, color: "#f85149", legendFmt: fmtNum },
    ], fmtNum, 1);
    lineChart("latency", t, [
      { name: "p50", values: s.p50_ms, legendFmt: fmtMs },
      { name: "p95", values: s.p95_ms, color: "#d29922", legendFmt: fmtMs },
    ], fmtMs, 1);
    lineChart("overhead", t, [
      { name: "p50", values: s.overhead_p50_ms, legendFmt: fmtMs },
      { name: "p95", values: s.overhead_p95_ms, color: "#d29922", legendFmt: fmtMs },
    ], fmtMs, 0.1);
    lineChart("rates", t, [
      { name: "errors (5xx)", values: pct(s.error_rate), color: "#f85149" },
      { name: "fallbacks", values: pct(s.fallback_rate), color: "#d29922" },
    ], (v) => fmtNum(v) + "%", 1);
    lineChart("variants", t, breakdown(s.variants), fmtNum, 1);
    lineChart("providers", t, breakdown(s.providers), fmtNum, 1);
    lineChart("failures", t, breakdown(s.attempt_failures), fmtNum, 1);
    lineChart("tokens", t, [
      { name: "in", values: s.tokens_in_ps, legendFmt: fmtNum },
      { name: "out", values: s.tokens_out_ps, color: "#3fb950", legendFmt: fmtNum },
    ], fmtNum, 10);
    const perMin = 60 / d.step_s;
    lineChart("cost", t, [
      { name: "USD/min", values: s.cost_usd.map((v) => v * perMin), color: "#bc8cff",
        legendFmt: fmtUsd },
    ], fmtUsd, 0.001);
    lineChart("lag", t, [
      { name: "lag", values: s.loop_lag_ms, color: "#39c5cf", legendFmt: fmtMs },
    ], fmtMs, 1);
  }

  // ---- figures and tables -------------------------------------------------------------------
  function setKpi(id, text, level) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle("bad", level === "bad");
    el.classList.toggle("warn", level === "warn");
  }

  function drawKpis(d) {
    const m = d.summary;
    const open = d.circuits.filter((c) => c.state === "open").length;
    setKpi("k-rps", fmtNum(m.rps));
    setKpi("k-p50", fmtMs(m.p50_ms));
    setKpi("k-p95", fmtMs(m.p95_ms));
    setKpi("k-ovh", fmtMs(m.overhead_p95_ms), m.overhead_p95_ms > 50 ? "warn" : "");
    setKpi("k-ttft", fmtMs(m.ttft_p95_ms));
    setKpi("k-err", fmtPct(m.error_rate), m.error_rate > 0.05 ? "bad" : m.error_rate > 0 ? "warn" : "");
    setKpi("k-fb", fmtPct(m.fallback_rate), m.fallback_rate > 0.2 ? "warn" : "");
    setKpi("k-inflight", fmtNum(d.in_flight));
    setKpi("k-lag", fmtMs(d.loop_lag_ms), d.loop_lag_ms > 100 ? "bad" : d.loop_lag_ms > 20 ? "warn" : "");
    setKpi("k-open", String(open), open > 0 ? "bad" : "");
    setKpi("k-tokens", fmtNum(m.tokens_in + m.tokens_out));
    setKpi("k-cost", fmtUsd(m.cost_usd));
    setKpi("k-cache", m.tokens_in ? fmtPct(m.cache_hit_ratio) : "–");
    setKpi("k-total", fmtNum(d.totals.requests));
    setKpi("k-cost-total", fmtUsd(d.totals.cost_usd));
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function fillTable(id, rows, makeRow) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      tr.append(...makeRow(r));
      return tr;
    }));
  }

  function badge(state) {
    const td = document.createElement("td");
    const b = document.createElement("span");
    b.className = "badge " + state;
    b.textContent = state.replace("_", "-");
    td.append(b);
    return td;
  }

  function drawTables(d) {
    const counts = { open: 0, half_open: 0, closed: 0 };
    d.circuits.forEach((c) => { counts[c.state] = (counts[c.state] || 0) + 1; });
    $("circuit-summary").textContent =
      `${counts.open} open · ${counts.half_open} half-open · ${counts.closed} closed`;
    fillTable("t-circuits", d.circuits, (c) => [
      cell(c.deployment), badge(c.state), cell(String(c.consecutive_failures), "num"),
      cell(c.state === "closed" ? "" : fmtDuration(c.open_for_s), "num"),
      cell(fmtMs(c.latency_ms), "num"), cell(fmtNum(c.requests), "num"),
      cell(fmtNum(c.failures), "num"), cell(c.last_failure || ""),
    ]);
    const quota = d.plan_quota || [];
    $("p-quota").classList.toggle("hidden", quota.length === 0);
    fillTable("t-quota", quota, (q) => [
      cell(q.provider), cell(q.surface), cell(q.window), cell(fmtPct(q.remaining), "num"),
      cell(q.resets_at ? fmtTime(q.resets_at) : "–", "num"),
    ]);
    const usage = (r) => [cell(fmtNum(r.tokens_in || 0), "num"), cell(fmtNum(r.tokens_out || 0), "num"),
      cell(fmtUsd(r.cost_usd || 0), "num")];
    // the share of prompt tokens the host read from its prompt cache (session affinity)
    const cached = (r) => cell(r.tokens_in ? fmtPct((r.tokens_cached || 0) / r.tokens_in) : "", "num");
    fillTable("t-variant", d.totals.by_variant, (r) => [cell(r.variant), cell(fmtNum(r.requests || 0), "num"), ...usage(r), cached(r)]);
    fillTable("t-provider", d.totals.by_provider, (r) => [cell(r.provider), cell(fmtNum(r.requests || 0), "num"), ...usage(r), cached(r)]);
    fillTable("t-key", d.totals.by_key, (r) => [cell(r.key), ...usage(r)]);
    fillTable("t-api", d.totals.by_api || [], (r) => [cell(r.api), cell(fmtNum(r.requests || 0), "num"), cell(fmtNum(r.errors || 0), "num")]);
  }

  function render(d) {
    last = d;
    $("version").textContent = "v" + d.version;
    $("meta").textContent = `up ${fmtDuration(d.uptime_s)} · state ${d.state.backend}` +
      (d.state.degraded ? " (degraded)" : d.state.reachable ? "" : " (unreachable)") +
      (d.state.records ? " · postgres " + (d.state.records.reachable ? "ok" :
        "down: " + (d.state.records.ledger_queued + d.state.records.ledger_spooled) +
        " spend rows queued") : "");
    drawKpis(d);
    drawCharts(d);
    drawTables(d);
    document.body.dataset.updated = String(d.now);
  }

  // ---- data feed ----------------------------------------------------------------------------
  function setStatus(text, cls) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + cls;
  }

  function showLogin(message) {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    $("board").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("logout").classList.add("hidden");
    $("login-msg").textContent = message || "";
    setStatus("locked", "idle");
    $("key").focus();
  }

  function showBoard() {
    $("login").classList.add("hidden");
    $("board").classList.remove("hidden");
    $("logout").classList.toggle("hidden", !AUTH_ON);
  }

  async function poll() {
    timer = null;
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (AUTH_ON) headers.Authorization = "Bearer " + key;
    let resp;
    try {
      resp = await fetch("/dashboard/data", { headers, cache: "no-store" });
    } catch (err) {
      setStatus("disconnected", "down");
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      sessionStorage.removeItem(KEY_STORE);
      showLogin("That key was refused: the dashboard needs the master key.");
      return;
    }
    if (!resp.ok) {
      setStatus("error " + resp.status, "down");
    } else {
      showBoard();
      render(await resp.json());
      setStatus("live", "live");
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key").value.trim();
      if (!key) { $("login-msg").textContent = "Enter the master key."; return; }
      sessionStorage.setItem(KEY_STORE, key);
      $("key").value = "";
      poll();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      showLogin("");
    });
    window.addEventListener("resize", () => { if (last) drawCharts(last); });
    if (AUTH_ON && !sessionStorage.getItem(KEY_STORE)) showLogin("");
    else poll();
  }

  start();
})();
