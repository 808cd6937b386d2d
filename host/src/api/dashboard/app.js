// The Oasis dashboard: a page over the same admin and status API that
// `oasis rollout` uses (every path it calls is in /openapi.json; a test
// checks that). The admin token lives in this tab's sessionStorage only and
// goes out as a bearer token; the page itself holds no data.
"use strict";

const TOKEN_KEY = "oasis-admin-token";
const $ = (sel) => document.querySelector(sel);
// Shadow agreement over time, per route/shadow/arm, kept by this page.
const history = new Map();
// What the operator chose in each route's form: the page re-renders every
// two seconds and must not take a half-made choice away.
const chosen = new Map();

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["authorization"] = "Bearer " + token();
  const r = await fetch(path, Object.assign({}, options, { headers }));
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { raw: text }; }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : r.status + " " + r.statusText;
    const e = new Error(msg); e.status = r.status; throw e;
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const pct = (x) => (x === undefined || x === null) ? "–" : (x * 100).toFixed(2) + "%";
const short = (d) => d ? String(d).replace("sha256:", "").slice(0, 12) : "–";
const version = (v) => v ? `${v.name} ${v.version} ${short(v.digest)}` : "–";

function toast(text) {
  const t = $("#toast"); t.textContent = text; t.classList.add("shown");
  setTimeout(() => t.classList.remove("shown"), 3000);
}

// Asks for confirmation (and a reason); resolves to the reason, or null.
function confirmAction(text) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-reason").value = "";
    d.onclose = () => resolve(d.returnValue === "ok" ? $("#confirm-reason").value : null);
    d.showModal();
  });
}

async function change(text, path, body) {
  const reason = await confirmAction(text);
  if (reason === null) return;
  const b = typeof body === "function" ? body(reason) : body;
  try {
    await api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(b || {}) });
    toast("done: " + text);
  } catch (e) {
    toast("refused: " + e.message);
  }
  refresh();
}

function sparkline(values) {
  const w = 120, h = 24;
  if (values.length < 2) return el("span", {}, "");
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * w},${h - Math.max(0, Math.min(1, v)) * h}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#12324a");
  svg.append(line);
  return svg;
}

function armsTable(r) {
  const rows = (r.arms || []).map((a) => el("tr", { "data-arm": a.arm },
    el("td", {}, a.arm),
    el("td", { class: "num requests" }, a.requests),
    el("td", { class: "num" }, pct(a.fallback_rate)),
    el("td", { class: "num" }, a.latency ? a.latency.p99_ms.toFixed(2) + " ms" : "–"),
    el("td", { class: "num promoted" }, pct(a.promoted_rate)),
    el("td", { class: "num" }, pct(a.eligible_rate)),
    el("td", { class: "num" }, a.candidates)));
  return el("table", { class: "arms" },
    el("thead", {}, el("tr", {}, ["arm", "requests", "fell back", "p99", "promoted", "eligible", "candidates"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function shadowsList(r) {
  return (r.shadows || []).map((s) => {
    const parts = (s.by_arm || []).map((b) => {
      const key = `${r.route}/${s.shadow}/${b.arm}`;
      const m = b.divergence.mean;
      const series = history.get(key) || [];
      if (m) { series.push(m.topk_overlap); if (series.length > 60) series.shift(); history.set(key, series); }
      return el("div", {}, `vs ${b.arm}: ${b.divergence.samples} samples, top-10 overlap ${m ? m.topk_overlap.toFixed(3) : "–"}, promoted ${m ? (m.promoted_share_diff * 100).toFixed(2) + "%" : "–"} `, sparkline(series));
    });
    return el("div", { class: "shadow" }, el("strong", {}, "shadow " + s.shadow), " ", version(s.version), parts);
  });
}

function routeCard(r, versionsByPolicy) {
  const c = r.canary;
  const versions = versionsByPolicy.get(r.policy) || [];
  const select = el("select", { class: "canary-version", "aria-label": "canary version" },
    versions.map((v) => el("option", { value: v.digest }, `${v.version} ${short(v.digest)}`)));
  const percent = el("input", { type: "number", min: "0", max: "100", step: "0.1", value: c ? c.percent : 5, class: "canary-percent", "aria-label": "canary percent" });
  if (chosen.has(r.route + "/version")) select.value = chosen.get(r.route + "/version");
  if (chosen.has(r.route + "/percent")) percent.value = chosen.get(r.route + "/percent");
  select.addEventListener("change", () => chosen.set(r.route + "/version", select.value));
  percent.addEventListener("input", () => chosen.set(r.route + "/percent", percent.value));
  const g = r.guardrails;
  return el("div", { class: "card route", "data-route": r.route },
    el("h3", {}, "route ", r.route, el("span", { class: "tag" }, "policy " + r.policy), r.killed ? el("span", { class: "tag killed" }, "KILLED") : null),
    el("div", {}, "stable ", version(r.stable), r.pinned ? el("span", { class: "tag" }, "pinned") : null),
    c ? el("div", { class: "canary" }, `canary ${version(c.version)} at ${c.percent}%`,
      c.window ? ` — window ${c.window.samples} samples, errors ${pct(c.window.error_rate)}, p99 ${c.window.p99_ms == null ? "–" : c.window.p99_ms.toFixed(2) + " ms"}${c.window.tripped ? ", TRIPPED" : ""}` : "") : null,
    el("div", {}, "baseline ", version(r.baseline)),
    g ? el("div", {}, `guardrails: errors ≤ ${g.max_error_rate ?? "–"}, p99 ≤ ${g.max_p99_ms ?? "–"} ms over ${g.window} requests`) : null,
    (r.problems || []).map((p) => el("div", { class: "problem" }, p)),
    el("div", {}, "since ", r.since || "–"),
    armsTable(r),
    shadowsList(r),
    el("div", { class: "actions" },
      select, percent,
      el("button", { class: "start-canary", onclick: () => change(`canary ${short(select.value)} at ${percent.value}% on ${r.route}`, `/admin/v1/routes/${encodeURIComponent(r.route)}/canary`, { version: select.value, percent: Number(percent.value) }) }, c ? "Set canary" : "Start canary"),
      el("button", { class: "promote", disabled: c ? null : "", onclick: () => change(`promote the canary of ${r.route}`, `/admin/v1/routes/${encodeURIComponent(r.route)}/promote`, {}) }, "Promote"),
      el("button", { class: "rollback", onclick: () => change(`roll back ${r.route}`, `/admin/v1/routes/${encodeURIComponent(r.route)}/rollback`, (reason) => reason ? { reason } : {}) }, "Roll back"),
      el("button", { class: "kill", onclick: () => change(`${r.killed ? "revive" : "kill"} ${r.route}`, `/admin/v1/routes/${encodeURIComponent(r.route)}/kill`, (reason) => Object.assign({ on: !r.killed }, reason ? { reason } : {})) }, r.killed ? "Revive" : "Kill"),
      el("button", { class: "shadow-add", onclick: () => change(`shadow ${select.value ? r.policy + "@" + short(select.value) : r.policy} on ${r.route}`, `/admin/v1/routes/${encodeURIComponent(r.route)}/shadows`, { policy: `${r.policy}@${select.value}`, on: true }) }, "Shadow this version")));
}

function policiesView(list, versionsByPolicy) {
  return list.map((p) => el("div", { class: "card policy", "data-policy": p.key },
    el("h3", {}, p.key, p.status ? el("span", { class: "tag" }, p.status) : null),
    el("table", {}, el("thead", {}, el("tr", {}, ["version", "digest", "settings", "contract", "source", "loaded"].map((h) => el("th", {}, h)))),
      el("tbody", {}, (versionsByPolicy.get(p.key) || []).map((v) => el("tr", {},
        el("td", {}, v.version), el("td", {}, el("code", {}, short(v.digest))), el("td", {}, el("code", {}, short(v.settings_sha256))),
        el("td", {}, v.contract || (p.active && p.active.contract) || "–"), el("td", {}, v.source || "–"), el("td", {}, v.loaded_at_ms ? new Date(v.loaded_at_ms).toISOString() : "–")))))));
}

const num = (x) => (x === undefined || x === null) ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: 1 });

function campaignRows(list) {
  return (list.campaigns || []).map((c) => el("tr", { class: "campaign", "data-campaign": c.campaign },
    el("td", {}, c.campaign), el("td", {}, c.route),
    el("td", { class: "num delivered" }, num(c.delivered)),
    el("td", { class: "num target" }, num(c.delivery_target)),
    el("td", { class: "num" }, num(c.expected_by_now)),
    el("td", { class: "num pace" + (c.pace !== null && c.pace !== undefined && c.pace < 0.9 ? " behind" : "") }, pct(c.pace)),
    el("td", { class: "num candidates" }, c.candidates),
    el("td", { class: "num promoted" }, c.promoted),
    el("td", { class: "num frequency-capped" }, c.frequency_capped),
    el("td", { class: "num" }, c.pacing_throttled),
    el("td", {}, c.delivered_from)));
}

function problemsView(policies, routes) {
  const out = [];
  for (const p of policies) {
    if (p.failure) out.push(`${p.key}: failed to load — ${p.failure.error || p.failure.message || JSON.stringify(p.failure)}`);
    for (const w of p.warnings || []) out.push(`${p.key}: ${w}`);
  }
  for (const r of routes) for (const pr of r.problems || []) out.push(`route ${r.route}: ${pr}`);
  return out.map((t) => el("div", { class: "problem" }, t));
}

async function refresh() {
  if (!token()) return;
  try {
    const [routes, policies, audit, campaigns] = await Promise.all([
      api("/v1/routes"), api("/v1/policies"), api("/admin/v1/audit?limit=15"), api("/v1/campaigns?limit=50"),
    ]);
    const list = (policies.policies || []);
    const versionsByPolicy = new Map();
    await Promise.all(list.map(async (p) => {
      try { const v = await api(`/v1/policies/${encodeURIComponent(p.key)}/versions`); versionsByPolicy.set(p.key, v.versions || []); }
      catch (_) { versionsByPolicy.set(p.key, []); }
    }));
    $("#problems").replaceChildren(...problemsView(list, routes.routes || []));
    $("#routes").replaceChildren(...(routes.routes || []).map((r) => routeCard(r, versionsByPolicy)));
    $("#policies").replaceChildren(...policiesView(list, versionsByPolicy));
    $("#campaigns tbody").replaceChildren(...campaignRows(campaigns));
    $("#campaigns-note").textContent = campaigns.tracked > (campaigns.campaigns || []).length
      ? `showing ${campaigns.campaigns.length} of ${campaigns.tracked} campaigns` : "";
    const sel = $("#upload-policy"); const chosen = sel.value;
    sel.replaceChildren(...list.map((p) => el("option", { value: p.key }, p.key))); if (chosen) sel.value = chosen;
    $("#audit tbody").replaceChildren(...(audit.entries || []).slice().reverse().map((e) => el("tr", { class: "audit-entry" },
      el("td", {}, e.at_ms ? new Date(e.at_ms).toISOString() : ""), el("td", {}, e.who || ""), el("td", { class: "action" }, e.percent == null ? e.action : `${e.action} at ${e.percent}%`),
      el("td", {}, e.route || e.policy || ""), el("td", {}, e.reason || e.detail || (e.digest ? short(e.digest) : "")))));
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status === 401 || e.status === 403) { logout("token refused: " + e.message); return; }
    $("#updated").textContent = "update failed: " + e.message;
  }
}

function show(loggedIn) {
  $("#login").hidden = loggedIn; $("#app").hidden = !loggedIn; $("#logout").hidden = !loggedIn;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY); show(false);
  $("#login-error").textContent = message || "";
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  try {
    await api("/admin/v1/audit?limit=1");
    $("#token").value = ""; show(true); refresh();
  } catch (e) {
    $("#token").value = "";
    logout(e.status === 401 || e.status === 403 ? "token refused" : "cannot reach the admin API: " + e.message);
  }
});
$("#logout").addEventListener("click", () => logout(""));
$("#upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("#upload-file").files[0]; const key = $("#upload-policy").value;
  if (!file || !key) return;
  const reason = await confirmAction(`upload ${file.name} as a version of ${key}`);
  if (reason === null) return;
  $("#upload-result").textContent = "uploading (the server compiles it)…";
  try {
    const v = await api(`/admin/v1/policies/${encodeURIComponent(key)}/versions`, { method: "POST", headers: { "content-type": "application/wasm" }, body: file });
    $("#upload-result").textContent = `stored ${v.version} ${short(v.digest)}`;
  } catch (e) { $("#upload-result").textContent = "refused: " + e.message; }
  refresh();
});

show(!!token());
refresh();
setInterval(refresh, 2000);
