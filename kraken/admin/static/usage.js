// Kraken usage page. The credential lives in `credential` (this closure) only: never in a
// cookie, localStorage, sessionStorage or the URL. Data comes from /usage/data.
(function () {
  "use strict";
  let credential = null;
  let charts = [];
  const $ = (id) => document.getElementById(id);
  const COLORS = { requests: "#2563eb", errors: "#dc2626", fallbacks: "#d97706",
                   prompt: "#7c3aed", completion: "#059669", cost: "#0891b2",
                   p50lat: "#2563eb", p95lat: "#1e3a8a", p50ttfb: "#16a34a", p95ttfb: "#b45309" };

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function query(extra) {
    const p = new URLSearchParams(extra || {});
    const customer = $("customer").value.trim();
    if (customer) p.set("customer", customer);
    return p.toString();
  }

  async function call(path) {
    const reply = await fetch(path, { headers: { Authorization: "Bearer " + credential },
                                      credentials: "omit", cache: "no-store" });
    if (!reply.ok) {
      let message = reply.status + " " + reply.statusText;
      try { message = (await reply.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return reply;
  }

  const fmt = {
    n: (v) => (v === null || v === undefined) ? "-" : Number(v).toLocaleString("en-US"),
    usd: (v) => (v === null || v === undefined) ? "-" : "$" + Number(v).toFixed(v < 1 ? 6 : 2),
    ms: (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(1) + " ms",
    pct: (v) => (v === null || v === undefined) ? "-" : (100 * v).toFixed(2) + " %",
    // A null cost beside requests is unknown (a model without a price), never $0.
    cost: (r) => (r.cost_usd === null && r.requests)
      ? "unknown (" + fmt.n(r.unpriced) + " unpriced)" : fmt.usd(r.cost_usd),
  };

  function tiles(total) {
    const t = total || { requests: 0, total_tokens: 0, cost_usd: 0, error_rate: 0, fallbacks: 0 };
    const items = [["Requests", fmt.n(t.requests)], ["Tokens", fmt.n(t.total_tokens)],
                   ["Cost", fmt.cost(t)], ["Error rate", fmt.pct(t.error_rate)],
                   ["Fallbacks", fmt.n(t.fallbacks)], ["Latency p50", fmt.ms(t.p50_latency_ms)],
                   ["Latency p95", fmt.ms(t.p95_latency_ms)], ["TTFB p50", fmt.ms(t.p50_ttfb_ms)],
                   ["TTFB p95", fmt.ms(t.p95_ttfb_ms)]];
    const box = $("tiles");
    box.replaceChildren();
    for (const [label, value] of items) {
      const div = document.createElement("div");
      div.className = "tile";
      const b = document.createElement("b");
      b.textContent = value;
      const span = document.createElement("span");
      span.textContent = label;
      div.append(b, span);
      box.append(div);
    }
  }

  function table(el, rows, title) {
    const cols = [[title, (r) => r.group || "(none)"], ["Requests", (r) => fmt.n(r.requests)],
                  ["Tokens", (r) => fmt.n(r.total_tokens)], ["Cost", fmt.cost],
                  ["Error rate", (r) => fmt.pct(r.error_rate)], ["Fallbacks", (r) => fmt.n(r.fallbacks)],
                  ["Latency p50", (r) => fmt.ms(r.p50_latency_ms)], ["Latency p95", (r) => fmt.ms(r.p95_latency_ms)],
                  ["TTFB p50", (r) => fmt.ms(r.p50_ttfb_ms)], ["TTFB p95", (r) => fmt.ms(r.p95_ttfb_ms)]];
    const head = document.createElement("tr");
    for (const [name] of cols) {
      const th = document.createElement("th");
      th.textContent = name;
      head.append(th);
    }
    el.replaceChildren(head);
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const [, get] of cols) {
        const td = document.createElement("td");
        td.textContent = get(r);
        tr.append(td);
      }
      el.append(tr);
    }
  }

  function chart(el, series, data) {
    const width = Math.max(320, el.clientWidth || 560);
    const opts = {
      width: width, height: 240,
      scales: { x: { time: true } },
      series: [{}].concat(series.map((s) => ({ label: s.label, stroke: s.color, width: 2,
                                               fill: s.fill ? s.color + "33" : undefined,
                                               spanGaps: true, points: { show: true, size: 6 } }))),
      axes: [{}, { size: 60 }],
    };
    charts.push(new uPlot(opts, data, el));
  }

  function render(d) {
    for (const c of charts) c.destroy();
    charts = [];
    const s = d.series;
    tiles(d.total);
    chart($("chart-requests"), [{ label: "requests", color: COLORS.requests, fill: true },
                                { label: "errors", color: COLORS.errors },
                                { label: "fallbacks", color: COLORS.fallbacks }],
          [s.t, s.requests, s.errors, s.fallbacks]);
    chart($("chart-tokens"), [{ label: "prompt", color: COLORS.prompt, fill: true },
                              { label: "completion", color: COLORS.completion, fill: true }],
          [s.t, s.prompt_tokens, s.completion_tokens]);
    chart($("chart-cost"), [{ label: "cost USD", color: COLORS.cost, fill: true }], [s.t, s.cost_usd]);
    chart($("chart-latency"), [{ label: "latency p50", color: COLORS.p50lat },
                               { label: "latency p95", color: COLORS.p95lat },
                               { label: "TTFB p50", color: COLORS.p50ttfb },
                               { label: "TTFB p95", color: COLORS.p95ttfb }],
          [s.t, s.p50_latency_ms, s.p95_latency_ms, s.p50_ttfb_ms, s.p95_ttfb_ms]);
    table($("by-model"), d.by_model, "Model");
    $("no-keys").hidden = d.by_key !== null;
    table($("by-key"), d.by_key || [], "Key");
  }

  async function load() {
    status("Loading…", false);
    try {
      const reply = await call("/usage/data?" + query({ hours: $("hours").value }));
      const d = await reply.json();
      $("report").hidden = false;
      render(d);
      const who = d.customer ? "customer " + d.customer : "all customers";
      status("Showing " + who + ", " + fmt.n(d.total ? d.total.requests : 0) + " requests.", false);
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      status(e.message, true);
    }
  }

  async function download(format) {
    try {
      const reply = await call("/usage/export?" + query({ format: format }));
      const blob = await reply.blob();
      const disposition = reply.headers.get("content-disposition") || "";
      const match = /filename="([^"]+)"/.exec(disposition);
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = match ? match[1] : "kraken-export." + format;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      status("Export downloaded (" + fmt.n(blob.size) + " bytes).", false);
    } catch (e) {
      status(e.message, true);
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const typed = $("credential").value.trim();
    if (typed) credential = typed;
    if (!credential) { status("Enter a Kraken API key or the admin token.", true); return; }
    $("credential").value = "";  // kept in memory only, not in the form
    $("credential").placeholder = "(kept in memory)";
    load();
  });
  $("forget").addEventListener("click", () => {
    credential = null;
    $("credential").placeholder = "";
    $("report").hidden = true;
    status("Credential forgotten.", false);
  });
  $("export-jsonl").addEventListener("click", () => download("jsonl"));
  $("export-csv").addEventListener("click", () => download("csv"));
})();
