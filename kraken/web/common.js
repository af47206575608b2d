// Shared by Kraken's browser pages (the admin listener's usage page, the client listener's
// portal): number formats, tiles, tables, uPlot charts of the usage statistics, downloads.
// One copy, served to both, so the two pages draw the same numbers the same way.
window.KrakenPage = (function () {
  "use strict";
  const COLORS = { requests: "#2563eb", errors: "#dc2626", fallbacks: "#d97706",
                   prompt: "#7c3aed", completion: "#059669", cost: "#0891b2",
                   p50lat: "#2563eb", p95lat: "#1e3a8a", p50ttfb: "#16a34a", p95ttfb: "#b45309" };
  let charts = [];

  const fmt = {
    n: (v) => (v === null || v === undefined) ? "-" : Number(v).toLocaleString("en-US"),
    usd: (v) => (v === null || v === undefined) ? "-" : "$" + Number(v).toFixed(v < 1 ? 6 : 2),
    ms: (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(1) + " ms",
    pct: (v) => (v === null || v === undefined) ? "-" : (100 * v).toFixed(2) + " %",
    // A null cost beside requests is unknown (a model without a price), never $0.
    cost: (r) => (r.cost_usd === null && r.requests)
      ? "unknown (" + fmt.n(r.unpriced) + " unpriced)" : fmt.usd(r.cost_usd),
  };

  function tiles(box, total) {
    const t = total || { requests: 0, total_tokens: 0, cost_usd: 0, error_rate: 0, fallbacks: 0 };
    const items = [["Requests", fmt.n(t.requests)], ["Tokens", fmt.n(t.total_tokens)],
                   ["Cost", fmt.cost(t)], ["Error rate", fmt.pct(t.error_rate)],
                   ["Fallbacks", fmt.n(t.fallbacks)], ["Latency p50", fmt.ms(t.p50_latency_ms)],
                   ["Latency p95", fmt.ms(t.p95_latency_ms)], ["TTFB p50", fmt.ms(t.p50_ttfb_ms)],
                   ["TTFB p95", fmt.ms(t.p95_ttfb_ms)]];
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

  // A table of rows: cols is a list of [heading, row => text]; text only, never HTML.
  function grid(el, cols, rows) {
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
        const value = get(r);
        if (value instanceof Node) td.append(value); else td.textContent = value;
        tr.append(td);
      }
      el.append(tr);
    }
  }

  function table(el, rows, title) {
    grid(el, [[title, (r) => r.group || "(none)"], ["Requests", (r) => fmt.n(r.requests)],
              ["Tokens", (r) => fmt.n(r.total_tokens)], ["Cost", fmt.cost],
              ["Error rate", (r) => fmt.pct(r.error_rate)], ["Fallbacks", (r) => fmt.n(r.fallbacks)],
              ["Latency p50", (r) => fmt.ms(r.p50_latency_ms)], ["Latency p95", (r) => fmt.ms(r.p95_latency_ms)],
              ["TTFB p50", (r) => fmt.ms(r.p50_ttfb_ms)], ["TTFB p95", (r) => fmt.ms(r.p95_ttfb_ms)]],
         rows);
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

  // The four charts of a series (as /usage/data and /v1/account/usage/series answer it) into
  // the elements of `els` (requests, tokens, cost, latency); earlier charts are destroyed.
  function drawCharts(els, s) {
    for (const c of charts) c.destroy();
    charts = [];
    chart(els.requests, [{ label: "requests", color: COLORS.requests, fill: true },
                         { label: "errors", color: COLORS.errors },
                         { label: "fallbacks", color: COLORS.fallbacks }],
          [s.t, s.requests, s.errors, s.fallbacks]);
    chart(els.tokens, [{ label: "prompt", color: COLORS.prompt, fill: true },
                       { label: "completion", color: COLORS.completion, fill: true }],
          [s.t, s.prompt_tokens, s.completion_tokens]);
    chart(els.cost, [{ label: "cost USD", color: COLORS.cost, fill: true }], [s.t, s.cost_usd]);
    chart(els.latency, [{ label: "latency p50", color: COLORS.p50lat },
                        { label: "latency p95", color: COLORS.p95lat },
                        { label: "TTFB p50", color: COLORS.p50ttfb },
                        { label: "TTFB p95", color: COLORS.p95ttfb }],
          [s.t, s.p50_latency_ms, s.p95_latency_ms, s.p50_ttfb_ms, s.p95_ttfb_ms]);
  }

  // Hand a fetched reply to the browser as a file; the name from Content-Disposition.
  async function save(reply, fallbackName) {
    const blob = await reply.blob();
    const disposition = reply.headers.get("content-disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = match ? match[1] : fallbackName;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    return blob.size;
  }

  return { COLORS: COLORS, fmt: fmt, tiles: tiles, grid: grid, table: table,
           drawCharts: drawCharts, save: save };
})();
