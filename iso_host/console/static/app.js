// iso-host console: the host's live view in plain JS (no framework, no build, no CDN).
// Every value from the host reaches the page as text (textContent / append), never as HTML.
"use strict";

(() => {
  const MAX_ROWS = 500; // rows Live keeps; older ones fall off the bottom
  const LOAD_LIMIT = 200; // rows Live asks for when it (re)loads
  const TOKEN_KEY = "iso-host-token";
  const CURRENCIES = {
    "036": "AUD", "124": "CAD", "156": "CNY", "344": "HKD", "356": "INR", "392": "JPY",
    "702": "SGD", "756": "CHF", "826": "GBP", "840": "USD", "978": "EUR",
  };

  const state = {
    info: { control: false, token_required: false, dialect: "", version: "" },
    view: "live",
    filter: { tid: "", kind: "", code: "", batch: "" },
    rows: new Map(), // id -> Row shown in Live
    loading: null, // rows that arrived while Live was reloading, or null
    loadSeq: 0,
    paused: false,
    buffer: [], // rows that arrived while paused
    inspected: null,
    anomalies: new Map(), // id -> Anomaly
    unseenAnomalies: 0,
    editing: null, // index of the scenario the form edits, or null for a new one
    refreshTimer: null,
  };

  // ---- small helpers -------------------------------------------------------------------------------------------

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const byTestId = (id) => $(`[data-testid="${id}"]`);

  /** An element with attributes and children; strings become text nodes, null / false / undefined are left out. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const text = (value, empty = "—") => (value === null || value === undefined || value === "" ? empty : String(value));

  function money(amount, currency) {
    if (amount === null || amount === undefined) return "";
    const code = currency ? CURRENCIES[currency] || currency : "";
    return code ? `${amount} ${code}` : String(amount);
  }

  const latency = (ms) => (typeof ms === "number" ? `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : "");

  function clockTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString([], { hour12: false });
  }

  function codeBadge(code) {
    if (!code) return el("span", { class: "code none" }, "—");
    return el("span", { class: `code ${code === "00" ? "ok" : "bad"}`, "data-testid": "code" }, code);
  }

  function yesNo(value, yes = "yes", no = "no", offClass = "off") {
    if (value === null || value === undefined) return el("span", { class: "muted", title: "not known" }, "—");
    return el("span", { class: `flag ${value ? "on" : offClass}` }, value ? yes : no);
  }

  class ApiError extends Error {
    constructor(message, field) {
      super(message);
      this.field = field || null;
    }
  }

  /** The JSON API: parsed JSON, or an ApiError carrying the host's "error" text and the "field" it names. */
  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError("the host does not answer: is iso-host serve running?");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401 && state.info.token_required) {
        sessionStorage.removeItem(TOKEN_KEY);
        showTokenForm();
      }
      const message = data && data.error ? data.error : `${response.status} ${response.statusText}`.trim();
      throw new ApiError(message, data && data.field);
    }
    return data;
  }

  function showError(name, error) {
    const box = byTestId(`${name}-error`);
    if (!box) return;
    box.textContent = error ? (error.message || String(error)) : "";
    box.hidden = !error;
  }

  /** Run a request for a view: its error (or none) shows in the view's error line. */
  async function guarded(name, work) {
    try {
      const result = await work();
      showError(name, null);
      return result;
    } catch (error) {
      showError(name, error);
      return undefined;
    }
  }

  /** ``{"KEY": [...]}``; a list that live control answers comes as ``{"ok": true, "result": {"KEY": [...]}}``. */
  const listOf = (data, key) => (data && (data[key] || (data.result && data.result[key]))) || [];

  const query = (params) => {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null) search.set(key, value);
    return search.toString();
  };

  // ---- info, control and the token -------------------------------------------------------------------------

  async function loadInfo() {
    const info = await guarded("global", () => api("/api/info"));
    if (info) state.info = info;
    const { control, token_required: tokenRequired, dialect, version } = state.info;
    byTestId("info").textContent = [dialect, version && `v${version}`].filter(Boolean).join(" · ");
    document.body.classList.toggle("readonly", !control);
    const mode = byTestId("mode");
    mode.textContent = control ? "control" : "read-only";
    mode.className = `pill ${control ? "on" : "off"}`;
    mode.title = control
      ? "Scenarios, terminals, cards and the clock can be changed from here"
      : "Read-only: set [http] control = true in the host's config to change scenarios, terminals, cards and the clock";
    if (control && tokenRequired && !sessionStorage.getItem(TOKEN_KEY)) showTokenForm();
  }

  function showTokenForm() {
    const form = byTestId("token-form");
    form.hidden = false;
    $("input", form).focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const token = form.elements.token.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    form.reset();
    form.hidden = true;
  }

  // ---- routing: #live?tid=..&kind=..&code=..&batch=.. | #inspector/ID | #terminals | ... -------------------

  function route() {
    const hash = location.hash.replace(/^#/, "") || "live";
    const [path, search = ""] = hash.split("?");
    const [view, rawId] = path.split("/");
    const id = rawId ? decodeURIComponent(rawId) : "";
    const known = ["live", "inspector", "terminals", "batches", "anomalies", "scenarios"];
    show(known.includes(view) ? view : "live");
    if (view === "live" || !known.includes(view)) {
      const params = new URLSearchParams(search);
      const filter = { tid: "", kind: "", code: "", batch: "" };
      for (const key of Object.keys(filter)) filter[key] = params.get(key) || "";
      if (JSON.stringify(filter) !== JSON.stringify(state.filter)) setFilter(filter);
    } else if (view === "inspector" && id) {
      inspect(id);
    }
  }

  function show(view) {
    state.view = view;
    for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
    for (const tab of $$(".tabs a")) {
      const active = tab.dataset.view === view;
      tab.classList.toggle("active", active);
      if (active) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    refreshView();
  }

  function refreshView() {
    if (state.view === "terminals") loadTerminals();
    else if (state.view === "batches") loadBatches();
    else if (state.view === "anomalies") {
      state.unseenAnomalies = 0;
      renderAnomalyCount();
      loadAnomalies();
    } else if (state.view === "scenarios") {
      loadScenarios();
      loadCards();
      loadClock();
    }
  }

  /** After new transactions: the view on screen reloads once the burst is over (at most every half second). */
  function refreshSoon() {
    if (state.refreshTimer || !["terminals", "batches", "scenarios"].includes(state.view)) return;
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      if (state.view === "terminals") loadTerminals();
      else if (state.view === "batches") loadBatches();
      else if (state.view === "scenarios") {
        loadScenarios();
        loadCards();
      }
    }, 500);
  }

  // ---- Live ------------------------------------------------------------------------------------------------

  function setFilter(filter) {
    state.filter = filter;
    const form = byTestId("live-filters");
    for (const key of ["tid", "kind", "code"]) form.elements[key].value = filter[key];
    const chip = byTestId("filter-batch");
    chip.hidden = !filter.batch;
    $("b", chip).textContent = filter.batch;
    const search = query(filter);
    $('[data-view="live"]').setAttribute("href", `#live${search ? `?${search}` : ""}`); // back to Live keeps it
    reloadLive();
  }

  function filterFromInputs() {
    const form = byTestId("live-filters");
    const filter = { ...state.filter };
    for (const key of ["tid", "kind", "code"]) filter[key] = form.elements[key].value.trim();
    const search = query(filter);
    history.replaceState(null, "", `#live${search ? `?${search}` : ""}`);
    setFilter(filter);
  }

  const matches = (row) => {
    const f = state.filter;
    return (!f.tid || row.tid === f.tid) && (!f.kind || row.kind === f.kind) && (!f.code || row.code === f.code)
      && (!f.batch || (row.batch !== null && Number(row.batch) === Number(f.batch)));
  };

  async function reloadLive() {
    const seq = ++state.loadSeq;
    state.loading = [];
    const data = await guarded("live", () => api(`/api/transactions?${query({ ...state.filter, limit: LOAD_LIMIT })}`));
    if (seq !== state.loadSeq) return; // a newer filter won
    const arrived = state.loading;
    state.loading = null;
    if (!data) return;
    state.rows.clear();
    state.buffer = [];
    $("#live-rows").replaceChildren();
    addRows(listOf(data, "transactions"));
    addRows(arrived);
    renderPause();
  }

  function liveRow(row) {
    const declined = row.code && row.code !== "00";
    return el("tr", {
      "data-testid": "live-row", "data-id": row.id, "data-code": row.code || "", "data-kind": row.kind || "",
      "data-batch": row.batch || "", "data-amount": row.amount || "",
      class: declined ? "declined" : null, tabindex: 0, title: row.reason ? `${row.reason} · ${row.time}` : row.time,
    },
    el("td", { class: "mono" }, row.local_time || clockTime(row.time)),
    el("td", { class: "mono" }, text(row.tid)),
    el("td", {}, text(row.kind)),
    el("td", { class: "mono muted" }, text(row.mti, "")),
    el("td", { class: "num mono" }, money(row.amount, row.currency)),
    el("td", { class: "mono" }, text(row.pan, "")),
    el("td", { class: "mono muted" }, text(row.stan, "")),
    el("td", { "data-testid": "response" }, codeBadge(row.code), " ",
      el("span", { class: "meaning" }, text(row.meaning || row.reason, ""))),
    el("td", { class: "num mono muted" }, latency(row.latency_ms)));
  }

  /** Put rows into Live's table, newest first: new ids on top, known ids replaced, the oldest trimmed. */
  function addRows(rows) {
    const tbody = $("#live-rows");
    const sorted = rows.filter(matches).sort((a, b) => b.id - a.id);
    const top = tbody.firstElementChild ? Number(tbody.firstElementChild.dataset.id) : -Infinity;
    const fresh = document.createDocumentFragment();
    for (const row of sorted) {
      const tr = liveRow(row);
      const known = state.rows.has(row.id) && tbody.querySelector(`tr[data-id="${row.id}"]`);
      state.rows.set(row.id, row);
      if (known) known.replaceWith(tr);
      else if (row.id > top) fresh.append(tr);
      else {
        const after = Array.from(tbody.children).find((other) => Number(other.dataset.id) < row.id);
        tbody.insertBefore(tr, after || null);
      }
    }
    tbody.prepend(fresh);
    while (tbody.children.length > MAX_ROWS) {
      state.rows.delete(Number(tbody.lastElementChild.dataset.id));
      tbody.lastElementChild.remove();
    }
    $("#live-empty").hidden = tbody.children.length > 0;
    const count = tbody.children.length;
    byTestId("live-count").textContent = `${count} row${count === 1 ? "" : "s"}`;
  }

  function onTransactions(rows) {
    if (state.loading) state.loading.push(...rows);
    else if (state.paused) {
      state.buffer.push(...rows.filter(matches));
      renderPause();
    } else addRows(rows);
    refreshSoon();
  }

  function renderPause() {
    const button = byTestId("pause");
    button.textContent = state.paused ? `Resume${state.buffer.length ? ` (${state.buffer.length} new)` : ""}` : "Pause";
    button.classList.toggle("active", state.paused);
    button.setAttribute("aria-pressed", String(state.paused));
  }

  function togglePause() {
    state.paused = !state.paused;
    if (!state.paused) {
      addRows(state.buffer);
      state.buffer = [];
    }
    renderPause();
  }

  function openRow(event) {
    const tr = event.target.closest("tr[data-id]");
    if (!tr || (event.type === "keydown" && event.key !== "Enter")) return;
    location.hash = `#inspector/${tr.dataset.id}`;
  }

  // ---- Inspector -------------------------------------------------------------------------------------------

  async function inspect(id) {
    state.inspected = id;
    $('[data-view="inspector"]').setAttribute("href", `#inspector/${encodeURIComponent(id)}`);
    const data = await guarded("inspector", () => api(`/api/transactions/${encodeURIComponent(id)}`));
    if (!data || state.inspected !== id) return;
    $("#inspector-empty").hidden = true;
    $("#inspector-body").hidden = false;
    renderInspector(data);
  }

  function fact(name, value, attrs = {}) {
    return [el("dt", { class: attrs.class === "decision" ? "decision" : null }, name), el("dd", attrs, value)];
  }

  function renderInspector({ transaction: row, request, response, mac, decision, scenario }) {
    const title = byTestId("inspector-title");
    title.replaceChildren(
      el("span", {}, `#${row.id} ${text(row.kind, "?")} · ${text(row.tid, "?")} `),
      codeBadge(row.code), " ", el("span", { "data-testid": "inspector-meaning" }, text(row.meaning, "")),
    );
    $("#inspector-facts").replaceChildren(
      ...fact("Time", `${text(row.local_time, "")} (${text(row.time)})`),
      ...fact("Amount", money(row.amount, row.currency) || "—", { class: "mono" }),
      ...fact("Card", text(row.pan), { class: "mono", "data-testid": "inspector-pan" }),
      ...fact("STAN / RRN", `${text(row.stan)} / ${text(row.rrn)}`, { class: "mono" }),
      ...fact("Batch", text(row.batch), { class: "mono" }),
      ...fact("Reason", text(row.reason), { class: "mono" }),
      ...fact("Latency", latency(row.latency_ms) || "—"),
      ...fact("MAC", el("span", { class: `mac ${mac || "absent"}`, "data-testid": "mac-status" }, text(mac, "absent"))),
      ...(scenario ? fact("Scenario", scenario, { "data-testid": "inspector-scenario" }) : []),
      ...fact("Decision", text(decision), { class: "decision", "data-testid": "decision" }),
    );
    renderFields(byTestId("inspector-request"), request, "request-mti");
    renderFields(byTestId("inspector-response"), response, "response-mti");
    byTestId("no-response").hidden = Boolean(response);
  }

  function renderFields(side, message, mtiTestId) {
    byTestId(mtiTestId).textContent = message ? text(message.mti, "") : "";
    const tbody = $("tbody", side);
    tbody.replaceChildren();
    $("table", side).hidden = !message;
    if (message) appendFields(tbody, message.fields || [], 0);
  }

  function appendFields(tbody, fields, depth) {
    for (const field of fields) {
      const value = el("td", { class: "mono value" }, text(field.value, ""));
      if (field.note) value.append(el("span", { class: "note", "data-testid": "field-note" }, field.note));
      tbody.append(el("tr", {
        "data-testid": "field-row", "data-field": field.id, class: `depth${Math.min(depth, 4)}${field.id === "39" ? " key" : ""}`,
      }, el("td", { class: "mono fid" }, text(field.id, "")), el("td", { class: "fname" }, text(field.name, "")), value));
      if (Array.isArray(field.parts) && field.parts.length) appendFields(tbody, field.parts, depth + 1);
    }
  }

  // ---- Terminals -------------------------------------------------------------------------------------------

  async function loadTerminals() {
    const data = await guarded("terminals", () => api("/api/terminals"));
    if (!data) return;
    const terminals = listOf(data, "terminals");
    $("#tids").replaceChildren(...terminals.map((t) => el("option", { value: t.tid })));
    $("#terminal-rows").replaceChildren(...terminals.map(terminalRow));
  }

  function terminalRow(t) {
    const kcv = t.kcv ? [t.kcv.tpk, t.kcv.tak, t.kcv.tdk].map((v) => text(v)).join(" / ") : "—";
    const today = t.today || { requests: 0, approved: 0, declined: 0 };
    const action = (name, label, disabled) => el("button", {
      type: "button", class: "small", "data-action": name, "data-tid": t.tid, "data-testid": `terminal-${name}`, disabled,
    }, label);
    return el("tr", {
      "data-testid": "terminal-row", "data-tid": t.tid, class: t.enabled ? null : "disabled",
    },
    el("td", { class: "mono" }, el("a", { href: `#live?tid=${encodeURIComponent(t.tid)}`, title: "Its transactions" }, t.tid)),
    el("td", { class: "mono" }, text(t.mid)),
    el("td", {}, yesNo(t.connected)),
    el("td", { "data-testid": "signed-on" }, yesNo(t.signed_on)),
    el("td", { "data-testid": "enabled" }, yesNo(t.enabled, "enabled", "disabled", "bad")),
    el("td", { class: "num mono" }, text(t.batch)),
    el("td", { class: "mono" }, text(t.last_stan)),
    el("td", { class: "mono", title: t.last_seen || "" }, t.last_seen ? clockTime(t.last_seen) : "—"),
    el("td", { class: "mono" }, kcv),
    el("td", { class: "num mono" }, `${today.requests} / ${today.approved} / ${today.declined}`),
    el("td", { class: "control" }, el("div", { class: "actions" },
      t.enabled ? action("disable", "Disable", false) : action("enable", "Enable", false),
      action("signoff", "Sign off", !t.signed_on))));
  }

  async function onTerminalAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const { action, tid } = button.dataset;
    await guarded("terminals", () => api(`/api/terminals/${encodeURIComponent(tid)}/${action}`, { method: "POST" }));
    await loadTerminals();
  }

  // ---- Batches ---------------------------------------------------------------------------------------------

  async function loadBatches() {
    const tid = byTestId("batches-filter-tid").value.trim();
    const data = await guarded("batches", () => api(`/api/batches?${query({ tid })}`));
    if (data) $("#batch-rows").replaceChildren(...listOf(data, "batches").map(batchRow));
  }

  const side = (totals, key) => (totals ? `${totals[`${key}s`]} · ${totals[`${key}_amount`]}` : "—");

  function differenceText(difference) {
    if (difference === null || typeof difference !== "object") return String(difference);
    return Object.entries(difference).map(([key, value]) => `${key} ${typeof value === "object" ? JSON.stringify(value) : value}`)
      .join(", ");
  }

  function batchRow(b) {
    const differences = b.differences || [];
    const link = `#live?${query({ tid: b.tid, batch: b.batch })}`;
    return el("tr", {
      "data-testid": "batch-row", "data-tid": b.tid, "data-batch": b.batch, "data-status": b.status,
      class: differences.length ? "warn" : null,
    },
    el("td", { class: "mono", title: b.mid ? `merchant ${b.mid}` : null }, b.tid),
    el("td", { class: "num mono" }, text(b.batch)),
    el("td", { "data-testid": "batch-status" }, el("span", { class: `status ${b.status}` }, b.status),
      b.result ? el("span", { class: "muted" }, ` · ${b.result}`) : null),
    el("td", { class: "num mono" }, side(b.host_totals, "debit")),
    el("td", { class: "num mono" }, side(b.host_totals, "credit")),
    el("td", { class: "num mono" }, side(b.terminal_totals, "debit")),
    el("td", { class: "num mono" }, side(b.terminal_totals, "credit")),
    el("td", { "data-testid": "batch-differences" },
      differences.length ? el("ul", { class: "plain" }, differences.map((d) => el("li", {}, differenceText(d)))) : "—"),
    el("td", { class: "mono", title: b.settled_at || "" }, b.settled_at ? clockTime(b.settled_at) : "—"),
    el("td", {}, el("a", { href: link, "data-testid": "batch-transactions" },
      typeof b.transactions === "number" ? `${b.transactions} transaction${b.transactions === 1 ? "" : "s"}` : "transactions")));
  }

  // ---- Anomalies -------------------------------------------------------------------------------------------

  async function loadAnomalies() {
    const data = await guarded("anomalies", () => api("/api/anomalies"));
    if (!data) return;
    for (const anomaly of listOf(data, "anomalies")) state.anomalies.set(anomaly.id, anomaly);
    renderAnomalies();
  }

  function onAnomaly(anomaly) {
    const fresh = !state.anomalies.has(anomaly.id);
    state.anomalies.set(anomaly.id, anomaly);
    if (fresh && state.view !== "anomalies") state.unseenAnomalies += 1;
    renderAnomalyCount();
    renderAnomalies();
  }

  function renderAnomalyCount() {
    const badge = byTestId("anomaly-count");
    badge.textContent = String(state.unseenAnomalies);
    badge.hidden = state.unseenAnomalies === 0;
  }

  function renderAnomalies() {
    const anomalies = Array.from(state.anomalies.values()).sort((a, b) => b.id - a.id);
    $("#anomaly-rows").replaceChildren(...anomalies.map((a) => el("tr", { "data-testid": "anomaly-row", "data-id": a.id },
      el("td", { class: "mono", title: a.time }, clockTime(a.time)),
      el("td", { class: "mono" }, a.tid ? el("a", { href: `#live?tid=${encodeURIComponent(a.tid)}` }, a.tid) : "—"),
      el("td", {}, el("span", { class: "kind" }, a.kind)),
      el("td", {}, a.text),
      el("td", { class: "mono" }, (a.transactions || []).map((id) => [
        el("a", { href: `#inspector/${encodeURIComponent(id)}`, "data-testid": "anomaly-transaction" }, `#${id}`), " "])))));
    $("#anomalies-empty").hidden = anomalies.length > 0;
  }

  // ---- Scenarios, cards and the clock ----------------------------------------------------------------------

  const SCENARIO_TEXTS = ["name", "tid", "kind", "mti", "amount", "pan", "respond"];
  const SCENARIO_INTS = ["amount_cents", "delay_ms", "times"];
  const SCENARIO_FLAGS = ["no_reply", "close", "bad_mac"];
  let scenarios = [];

  async function loadScenarios() {
    const data = await guarded("scenarios", () => api("/api/scenarios"));
    if (!data) return;
    scenarios = listOf(data, "scenarios");
    $("#scenario-rows").replaceChildren(...scenarios.map(scenarioRow));
    $("#scenarios-empty").hidden = scenarios.length > 0;
  }

  const major = (minor) => (typeof minor === "number" ? (minor / 100).toFixed(2) : minor);

  function scenarioRow(s, index) {
    const wants = [
      s.tid && `terminal ${s.tid}`, s.kind && `kind ${s.kind}`, s.mti && `MTI ${s.mti}`,
      s.amount_minor !== null && s.amount_minor !== undefined && `amount ${major(s.amount_minor)}`,
      s.amount_cents !== null && s.amount_cents !== undefined && `cents .${String(s.amount_cents).padStart(2, "0")}`,
      s.card && "one card",
    ].filter(Boolean);
    const acts = [
      s.respond && `respond ${s.respond}`, s.delay_ms && `delay ${s.delay_ms} ms`, s.no_reply && "no reply",
      s.close && "close", s.bad_mac && "bad MAC",
    ].filter(Boolean);
    const left = s.times === null || s.times === undefined ? "always" : `${text(s.remaining, "0")} of ${s.times}`;
    return el("tr", { "data-testid": "scenario-row", "data-index": index, class: state.editing === index ? "editing" : null },
      el("td", { class: "num mono" }, String(index)),
      el("td", {}, text(s.name, "")),
      el("td", {}, wants.join(", ") || "any request"),
      el("td", { "data-testid": "scenario-acts" }, acts.join(", ") || "—"),
      el("td", { class: "num mono" }, left),
      el("td", { class: "control" }, el("div", { class: "actions" },
        el("button", { type: "button", class: "small", "data-action": "edit", "data-index": index, "data-testid": "scenario-edit" }, "Edit"),
        el("button", { type: "button", class: "small", "data-action": "remove", "data-index": index, "data-testid": "scenario-remove" }, "Remove"))));
  }

  async function onScenarioAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const index = Number(button.dataset.index);
    if (button.dataset.action === "edit") editScenario(index);
    else {
      await guarded("scenarios", () => api(`/api/scenarios/${index}`, { method: "DELETE" }));
      if (state.editing !== null) stopEditing();
      await loadScenarios();
    }
  }

  function editScenario(index) {
    const s = scenarios[index];
    const form = byTestId("scenario-form");
    form.reset();
    clearFieldErrors(form);
    for (const name of [...SCENARIO_TEXTS, ...SCENARIO_INTS]) {
      const value = name === "amount" ? major(s.amount_minor) : s[name];
      const unset = value === null || value === undefined || (name === "delay_ms" && value === 0);
      if (!unset && form.elements[name]) form.elements[name].value = String(value);
    }
    for (const name of SCENARIO_FLAGS) form.elements[name].checked = Boolean(s[name]);
    form.elements.pan.placeholder = s.card ? "re-enter the card" : "";
    state.editing = index;
    $("#scenario-form-title").textContent = `Edit scenario ${index}`;
    byTestId("scenario-submit").textContent = "Save";
    byTestId("scenario-cancel").hidden = false;
    $$("#scenario-rows tr").forEach((tr) => tr.classList.toggle("editing", Number(tr.dataset.index) === index));
    form.elements.name.focus();
  }

  function stopEditing() {
    const form = byTestId("scenario-form");
    form.reset();
    clearFieldErrors(form);
    form.elements.pan.placeholder = "";
    state.editing = null;
    $("#scenario-form-title").textContent = "Add a scenario";
    byTestId("scenario-submit").textContent = "Add";
    byTestId("scenario-cancel").hidden = true;
    $$("#scenario-rows tr.editing").forEach((tr) => tr.classList.remove("editing"));
  }

  /** The form as a scenario table: empty inputs left out; whole numbers sent as numbers when they are digits (else
   * as typed, so the host names the field), so the host's one set of checks decides. */
  function scenarioBody(form) {
    const body = {};
    for (const name of SCENARIO_TEXTS) {
      const value = form.elements[name].value.trim();
      if (value) body[name] = value;
    }
    for (const name of SCENARIO_INTS) {
      const value = form.elements[name].value.trim();
      if (value) body[name] = /^\d+$/.test(value) ? Number(value) : value;
    }
    for (const name of SCENARIO_FLAGS) if (form.elements[name].checked) body[name] = true;
    return body;
  }

  function clearFieldErrors(form) {
    for (const input of $$(".invalid", form)) {
      input.classList.remove("invalid");
      input.removeAttribute("aria-invalid");
    }
    showError("scenario", null);
  }

  async function onScenarioSubmit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    clearFieldErrors(form);
    const editing = state.editing;
    const path = editing === null ? "/api/scenarios" : `/api/scenarios/${editing}`;
    try {
      await api(path, { method: editing === null ? "POST" : "PUT", body: scenarioBody(form) });
    } catch (error) {
      showError("scenario", error);
      const name = error.field ? error.field.split(".").pop() : null;
      const input = name && form.elements[name];
      if (input && input.classList) {
        input.classList.add("invalid");
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
      return;
    }
    stopEditing();
    await loadScenarios();
  }

  async function clearScenarios() {
    await guarded("scenarios", () => api("/api/scenarios", { method: "DELETE" }));
    if (state.editing !== null) stopEditing();
    await loadScenarios();
  }

  async function loadCards() {
    const data = await guarded("cards", () => api("/api/cards"));
    if (!data) return;
    const cards = listOf(data, "cards");
    $("#card-rows").replaceChildren(...cards.map((c, index) => el("tr", { "data-testid": "card-row" },
      el("td", { class: "mono" }, c.pan),
      el("td", {}, el("span", { class: `status ${c.status}` }, text(c.status))),
      el("td", { class: "num mono" }, text(c.balance), c.available !== undefined && c.available !== c.balance
        ? el("span", { class: "muted", title: "available: the balance less open pre-auth holds" }, ` (${text(c.available)})`)
        : null),
      el("td", { class: "num mono" }, text(c.limit)),
      el("td", { class: "mono" }, text(c.expiry)),
      el("td", {}, yesNo(c.chip ?? c.has_imk)),
      el("td", { class: "control" }, el("button", { type: "button", class: "small", "data-index": index,
        "data-testid": "card-remove" }, "Remove")))));
    $("#cards-empty").hidden = cards.length > 0;
  }

  /** The card form as the API takes it: empty fields left out, so the host's defaults apply. */
  async function addCard(event) {
    event.preventDefault();
    const card = {};
    for (const [name, value] of new FormData(event.target)) {
      if (String(value).trim() !== "") card[name] = String(value).trim();
    }
    if (await guarded("cards", () => api("/api/cards", { method: "POST", body: card })) !== undefined) {
      event.target.reset();
      await loadCards();  // only then: a reload would hide the host's error
    }
  }

  async function onCardAction(event) {
    const button = event.target.closest("button[data-index]");
    if (!button) return;
    if (await guarded("cards", () => api(`/api/cards/${Number(button.dataset.index)}`, { method: "DELETE" })) !== undefined) {
      await loadCards();
    }
  }

  async function reloadCards() {
    await guarded("cards", () => api("/api/cards/reload", { method: "POST" }));
    await loadCards();
  }

  function renderClock(clock) {
    byTestId("clock-now").textContent = text(clock.now);
    const offset = Number(clock.offset_s) || 0;
    byTestId("clock-offset").textContent = offset
      ? `(${offset > 0 ? "+" : ""}${offset} s from the system clock)` : "(the system clock)";
  }

  async function loadClock() {
    const clock = await guarded("clock", () => api("/api/clock"));
    if (clock) renderClock(clock);
  }

  async function setClock(body) {
    const result = await guarded("clock", () => api("/api/clock", { method: "POST", body }));
    if (result) await loadClock();
  }

  function onClockSet(event) {
    event.preventDefault();
    let time = event.currentTarget.elements.time.value;
    if (/^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(time)) time += ":00";
    setClock({ time });
  }

  function onClockAdvance(event) {
    event.preventDefault();
    const raw = event.currentTarget.elements.advance_s.value.trim();
    setClock({ advance_s: /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw });
  }

  // ---- the stream ------------------------------------------------------------------------------------------

  function setStream(status, label) {
    const pill = byTestId("stream-status");
    pill.textContent = label;
    pill.className = `pill ${status}`;
    pill.dataset.state = status;
  }

  /** Server-Sent Events: rows and anomalies as they happen. EventSource reconnects by itself; after a gap the
   * views reload once, so nothing that happened meanwhile is missing. */
  function connectStream() {
    const source = new EventSource("/api/stream");
    let gap = false;
    source.addEventListener("open", () => {
      setStream("on", "live");
      if (gap) {
        reloadLive();
        loadAnomalies();
        refreshView();
      }
      gap = false;
    });
    source.addEventListener("error", () => {
      gap = true;
      if (source.readyState === EventSource.CLOSED) {
        setStream("off", "disconnected");
        source.close();
        setTimeout(connectStream, 3000); // the browser gave up (not a 200): try again once, later
      } else setStream("off", "reconnecting");
    });
    source.addEventListener("transactions", (event) => onTransactions(JSON.parse(event.data)));
    source.addEventListener("anomaly", (event) => onAnomaly(JSON.parse(event.data)));
  }

  // ---- wiring ----------------------------------------------------------------------------------------------

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function start() {
    byTestId("token-form").addEventListener("submit", onTokenSubmit);
    const filters = byTestId("live-filters");
    filters.addEventListener("input", debounce(filterFromInputs, 250));
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      filterFromInputs();
    });
    filters.addEventListener("reset", () => setTimeout(() => {
      state.filter.batch = "";
      filterFromInputs();
    }));
    $("button", byTestId("filter-batch")).addEventListener("click", () => {
      state.filter.batch = "";
      filterFromInputs();
    });
    byTestId("pause").addEventListener("click", togglePause);
    $("#live-rows").addEventListener("click", openRow);
    $("#live-rows").addEventListener("keydown", openRow);
    $("#terminal-rows").addEventListener("click", onTerminalAction);
    byTestId("batches-filter-tid").addEventListener("input", debounce(loadBatches, 250));
    $("#batch-filters").addEventListener("submit", (event) => event.preventDefault());
    $("#scenario-rows").addEventListener("click", onScenarioAction);
    byTestId("scenario-form").addEventListener("submit", onScenarioSubmit);
    byTestId("scenario-cancel").addEventListener("click", stopEditing);
    byTestId("scenarios-clear").addEventListener("click", clearScenarios);
    byTestId("cards-reload").addEventListener("click", reloadCards);
    $("#card-form").addEventListener("submit", addCard);
    $("#card-rows").addEventListener("click", onCardAction);
    byTestId("clock-set").addEventListener("submit", onClockSet);
    byTestId("clock-advance").addEventListener("submit", onClockAdvance);
    $("[data-advance]").addEventListener("click", (event) => setClock({ advance_s: Number(event.target.dataset.advance) }));
    window.addEventListener("hashchange", route);

    connectStream();
    loadInfo();
    loadTerminals(); // fills the terminal suggestions of the filters
    loadAnomalies().then(() => {
      if (state.view !== "anomalies") state.unseenAnomalies = state.anomalies.size;
      renderAnomalyCount();
    });
    state.filter = null; // the first route always loads Live
    route();
    if (state.filter === null) setFilter({ tid: "", kind: "", code: "", batch: "" });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
