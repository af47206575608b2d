// Kraken customer portal. The API key lives in `key` (this closure) only: never in a cookie,
// localStorage, sessionStorage or the URL; reloading the tab forgets it. Everything shown
// comes from the account API (/v1/account/...), which checks every call itself: the page
// shows a section only when GET /v1/account lists the permission it needs, and shows any
// refusal the API answers (status and message), never hides it.
(function () {
  "use strict";
  const page = window.KrakenPage;
  const fmt = page.fmt;
  const API = "/v1/account";
  // section id -> the permission (kraken/accounts/roles.py action) its account API routes need
  const SECTIONS = [["account", "call_models"], ["keys", "manage_own_keys"],
                    ["members", "manage_members"], ["invitations", "call_models"],
                    ["usage", "read_own_usage"], ["export", "call_models"],
                    ["wallet", "billing"], ["delete", "call_models"]];
  let key = null;
  let me = null;  // GET /v1/account's answer for the key in memory
  let done = 0;
  const $ = (id) => document.getElementById(id);

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function finished() {  // one more operation ended (tests wait on this, not on time)
    document.body.dataset.done = String(++done);
  }

  async function call(method, path, body) {
    if (!key) throw new Error("Enter a Kraken API key.");
    const init = { method: method, credentials: "omit", cache: "no-store",
                   headers: { Authorization: "Bearer " + key } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const reply = await fetch(API + path, init);
    if (!reply.ok) {
      let message = reply.statusText;
      try { message = (await reply.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error("HTTP " + reply.status + ": " + message);
    }
    return reply;
  }

  async function json(method, path, body) {
    return (await call(method, path, body)).json();
  }

  // Run one user action: its success message, or the API's refusal, in the status line.
  async function act(work) {
    try {
      const message = await work();
      if (message) status(message, false);
    } catch (e) {
      status(e.message, true);
    } finally {
      finished();
    }
  }

  function button(label, action, data) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    Object.assign(b.dataset, data);
    return b;
  }

  // a path under the calling key's organisation; the date an invitation lapses
  const orgPath = (rest) => "/organisations/" + encodeURIComponent(me ? me.key.org_id : "-")
    + rest;
  const until = (i) => new Date(i.expires_at * 1000).toISOString().slice(0, 10);

  // ---- sections ------------------------------------------------------------------------

  function mount(allowed) {
    const main = $("portal");
    main.replaceChildren();
    for (const [id, permission] of SECTIONS) {
      if (!allowed.includes(permission)) continue;
      if (id === "members" && !me.key.org_id) continue;  // a personal key has no organisation
      main.append($("section-" + id).content.cloneNode(true));
    }
  }

  function showAccount() {
    const values = { id: me.id, email: me.email, org_id: me.key.org_id || "(personal key)",
                     role: me.key.role };
    for (const dd of document.querySelectorAll("#account [data-field]")) {
      dd.textContent = values[dd.dataset.field];
    }
  }

  // The keys shown so far, a page at a time (an organisation's admins see every member's
  // keys): "Load more" asks for the page after the last one shown; a change starts over.
  let keys = [];
  let nextKeys = null;  // the next page's `after`, or null once the last page is shown

  async function loadKeys(more) {
    const after = more && nextKeys ? "?after=" + encodeURIComponent(nextKeys) : "";
    const list = await json("GET", "/keys" + after);
    keys = after ? keys.concat(list.data) : list.data;
    nextKeys = list.has_more ? list.next_after : null;
    $("more-keys").hidden = nextKeys === null;
    page.grid($("key-list"), [
      ["Key", (k) => k.id], ["Name", (k) => k.name || ""], ["Status", (k) => k.status],
      ["Owner", (k) => k.customer_id], ["Requests / min", (k) => fmt.n(k.rpm)],
      ["Models", (k) => (k.allowed_models || ["all"]).join(", ")],
      ["", (k) => {
        const cell = document.createElement("span");
        if (k.status === "active") cell.append(button("Revoke", "revoke-key", { id: k.id }));
        cell.append(button("Delete", "delete-key", { id: k.id }));
        return cell;
      }]], keys);
    return list.data.length;
  }

  async function loadMembers() {
    const list = await json("GET", orgPath("/members"));
    page.grid($("member-list"), [
      ["Customer", (m) => m.customer_id], ["Role", (m) => m.role],
      ["", (m) => {
        const cell = document.createElement("span");
        const select = document.createElement("select");
        for (const role of ["owner", "admin", "developer", "restricted"]) {
          const option = new Option(role, role, false, role === m.role);
          select.append(option);
        }
        select.dataset.roleOf = m.customer_id;
        cell.append(select, button("Set role", "set-role", { customer: m.customer_id }),
                    button("Remove", "remove-member", { customer: m.customer_id }));
        return cell;
      }]], list.data);
  }

  async function loadInvitations() {  // the organisation's pending invitations (admins)
    const list = await json("GET", orgPath("/invitations"));
    page.grid($("invitation-list"), [
      ["Customer", (i) => i.customer_id], ["Role", (i) => i.role], ["Until", until],
      ["", (i) => button("Revoke", "revoke-invitation", { id: i.id })]], list.data);
  }

  async function loadMyInvitations() {  // those addressed to this key's customer
    const list = await json("GET", "/invitations");
    page.grid($("my-invitations"), [
      ["Organisation", (i) => i.org_name + " (" + i.org_id + ")"], ["Role", (i) => i.role],
      ["Until", until],
      ["", (i) => {
        const cell = document.createElement("span");
        cell.append(button("Accept", "accept-invitation", { id: i.id, org: i.org_name }),
                    button("Decline", "decline-invitation", { id: i.id, org: i.org_name }));
        return cell;
      }]], list.data);
  }

  async function loadUsage(hours) {
    const total = await json("GET", "/usage");
    const over = await json("GET", "/usage/series?hours=" + encodeURIComponent(hours || "24"));
    page.tiles($("tiles"), total.total);
    page.drawCharts({ requests: $("chart-requests"), tokens: $("chart-tokens"),
                      cost: $("chart-cost"), latency: $("chart-latency") }, over.series);
    page.table($("by-model"), total.by_model, "Model");
    page.table($("by-key"), total.by_key || [], "Key");
    return total;
  }

  async function loadWallet() {
    const w = await json("GET", "/wallet");
    $("balance").textContent = fmt.usd(w.balance_usd);
    page.grid($("ledger"), [
      ["When", (t) => new Date(t.ts * 1000).toISOString().replace("T", " ").slice(0, 19)],
      ["Kind", (t) => t.kind], ["Amount", (t) => fmt.usd(t.amount_usd)],
      ["Reference", (t) => t.ref || ""]], w.transactions);
  }

  const LOADERS = { keys: loadKeys,
                    members: async () => { await loadMembers(); await loadInvitations(); },
                    invitations: loadMyInvitations, usage: () => loadUsage("24"),
                    wallet: loadWallet };

  async function open() {
    try {
      me = await json("GET", "");
    } catch (e) {
      forget("");  // a refused key is not kept
      throw e;
    }
    mount(me.permissions);
    showAccount();
    const errors = [];
    for (const [id, load] of Object.entries(LOADERS)) {
      if (!$(id)) continue;
      try { await load(); } catch (e) { errors.push(id + ": " + e.message); }
    }
    if (errors.length) throw new Error(errors.join("\n"));
    return "Signed in as " + me.id + " (" + me.key.role + ").";
  }

  function forget(message) {
    key = null;
    me = null;
    $("key").placeholder = "";
    $("portal").replaceChildren();
    status(message, false);
  }

  // ---- actions (delegated: one listener each, whatever sections are on the page) -----------

  function fields(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.value.trim() === "") continue;
      const value = el.value.trim();
      if (el.name === "allowed_models") body[el.name] = value.split(",").map((m) => m.trim()).filter(Boolean);
      else body[el.name] = el.type === "number" ? Number(value) : value;
    }
    return body;
  }

  const SUBMITS = {
    "create-key": async (form) => {
      const created = await json("POST", "/keys", fields(form));
      $("new-secret").querySelector("code").textContent = created.secret;
      $("new-secret").hidden = false;
      form.reset();
      await loadKeys();
      return "Key " + created.key.id + " created.";
    },
    "add-member": async (form) => {
      const inv = await json("POST", orgPath("/members"), fields(form));
      form.reset();
      await loadInvitations();
      return "Invited " + inv.customer_id + " as " + inv.role + "; they join once they accept.";
    },
    "load-usage": async (form) => {
      const total = await loadUsage(form.elements.hours.value);
      return "Usage: " + fmt.n(total.total ? total.total.requests : 0) + " requests.";
    },
    "topup": async (form) => {
      const back = location.origin + location.pathname;
      const session = await json("POST", "/wallet/checkout",
                                 { amount_usd: Number(form.elements.amount_usd.value),
                                   success_url: back, cancel_url: back });
      status("Redirecting to Stripe…", false);
      location.assign(session.url);  // Stripe's page; the key in memory goes with this tab
      return null;
    },
  };

  const memberPath = (b) => orgPath("/members/" + encodeURIComponent(b.dataset.customer));

  const CLICKS = {
    "more-keys": async () => {
      const n = await loadKeys(true);
      return fmt.n(n) + " more keys shown (" + fmt.n(keys.length) + " in all).";
    },
    "revoke-key": async (b) => {
      await json("POST", "/keys/" + encodeURIComponent(b.dataset.id) + "/revoke");
      await loadKeys();
      return "Key " + b.dataset.id + " revoked.";
    },
    "delete-key": async (b) => {
      await json("DELETE", "/keys/" + encodeURIComponent(b.dataset.id));
      await loadKeys();
      return "Key " + b.dataset.id + " deleted.";
    },
    "set-role": async (b) => {
      const select = document.querySelector("select[data-role-of='" + CSS.escape(b.dataset.customer) + "']");
      await json("PATCH", memberPath(b), { role: select.value });
      await loadMembers();
      return b.dataset.customer + " is now " + select.value + ".";
    },
    "remove-member": async (b) => {
      await json("DELETE", memberPath(b));
      await loadMembers();
      return b.dataset.customer + " removed.";
    },
    "revoke-invitation": async (b) => {
      await json("DELETE", orgPath("/invitations/" + encodeURIComponent(b.dataset.id)));
      await loadInvitations();
      return "Invitation " + b.dataset.id + " revoked.";
    },
    "accept-invitation": async (b) => {
      const path = "/invitations/" + encodeURIComponent(b.dataset.id) + "/accept";
      const m = await json("POST", path);
      await loadMyInvitations();
      return "Joined " + b.dataset.org + " as " + m.role + ".";
    },
    "decline-invitation": async (b) => {
      await json("POST", "/invitations/" + encodeURIComponent(b.dataset.id) + "/decline");
      await loadMyInvitations();
      return "Declined the invitation of " + b.dataset.org + ".";
    },
    "export": async (b) => {
      const reply = await call("GET", "/export?format=" + encodeURIComponent(b.dataset.format));
      const size = await page.save(reply, "kraken-export." + b.dataset.format);
      return "Export downloaded (" + fmt.n(size) + " bytes).";
    },
    "delete-account": async () => {
      if (!$("delete-confirm").checked) throw new Error("Tick the box to confirm the deletion.");
      await json("DELETE", "");
      forget("Account deleted; the key is gone with it.");
      return null;
    },
  };

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    ev.preventDefault();
    if (form.id === "login") return;
    const run = SUBMITS[form.dataset.action];
    if (run) act(() => run(form));
  });
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    const run = b && CLICKS[b.dataset.action];
    if (run) act(() => run(b));
  });
  $("login").addEventListener("submit", () => {
    const typed = $("key").value.trim();
    $("key").value = "";  // kept in memory only, not in the form
    if (typed) key = typed;
    if (!key) { status("Enter a Kraken API key.", true); finished(); return; }
    $("key").placeholder = "(kept in memory)";
    act(open);
  });
  $("forget").addEventListener("click", () => { forget("Key forgotten."); finished(); });
})();
