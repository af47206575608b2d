// Kraken usage page. The credential lives in `credential` (this closure) only: never in a
// cookie, localStorage, sessionStorage or the URL. Data comes from /usage/data; formats,
// tables and charts are the shared KrakenPage (common.js).
(function () {
  "use strict";
  const page = window.KrakenPage;
  const fmt = page.fmt;
  let credential = null;
  const $ = (id) => document.getElementById(id);

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

  function render(d) {
    page.tiles($("tiles"), d.total);
    page.drawCharts({ requests: $("chart-requests"), tokens: $("chart-tokens"),
                      cost: $("chart-cost"), latency: $("chart-latency") }, d.series);
    page.table($("by-model"), d.by_model, "Model");
    $("no-keys").hidden = d.by_key !== null;
    page.table($("by-key"), d.by_key || [], "Key");
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
      const size = await page.save(reply, "kraken-export." + format);
      status("Export downloaded (" + fmt.n(size) + " bytes).", false);
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
