// tollgate's dashboard: asks for the admin key, fetches /admin/dashboard/data with it
// as a Bearer header, and draws the answer. Plain DOM and hand-made SVG, no library:
// the page is served from the binary and must work with no internet.
//
// Every value from the server is written with textContent or as an SVG attribute,
// never parsed as HTML: team, key and model names are chosen by users.
"use strict";

const STORAGE_KEY = "tollgate.adminKey";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#16a34a", "#db2777", "#ea580c", "#7c3aed", "#0891b2",
  "#ca8a04", "#dc2626", "#4b5563", "#65a30d"];
const DAY_MS = 86400000;

const $ = (id) => document.getElementById(id);
let range = { from: "30d", to: null };
// The UTC days the board shows, for the reconciliation panel.
let shownDays = null;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

// Money arrives as an exact decimal string and is shown as it is. Only bar lengths
// and axis ticks turn it into a float, where a rounding error is a sub-pixel.
const usd = (exact) => "$" + exact;
const amount = (exact) => parseFloat(exact) || 0;
const count = (n) => Number(n).toLocaleString("en-US");
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;
const tokens = (line) => line.prompt_tokens + line.completion_tokens;

function setState(state) {
  document.body.dataset.state = state;
}

function showSignIn(message) {
  sessionStorage.removeItem(STORAGE_KEY);
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("admin-key").value = "";
  setState("signed-out");
  $("admin-key").focus();
}

function query() {
  const params = new URLSearchParams();
  params.set("from", range.from);
  if (range.to) params.set("to", range.to);
  return params.toString();
}

async function load() {
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (!key) {
    showSignIn();
    return;
  }
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  $("error").textContent = "";
  setState("loading");
  let response;
  try {
    response = await fetch("/admin/dashboard/data?" + query(), {
      headers: { Authorization: "Bearer " + key },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    $("error").textContent = "Cannot reach tollgate: " + error.message;
    setState("error");
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  const message = body && body.error ? body.error.message : "HTTP " + response.status;
  if (response.status === 401 || response.status === 403) {
    showSignIn(message);
    return;
  }
  if (!response.ok || !body) {
    $("error").textContent = message;
    setState("error");
    return;
  }
  render(body);
  setState("ready");
}

function render(data) {
  const lastDay = new Date(data.to_ms - 1).toISOString().slice(0, 10);
  $("from").value = data.from.slice(0, 10);
  $("to").value = lastDay;
  $("range-label").textContent = data.from + " to " + data.to + " (UTC)";
  shownDays = { since: data.from.slice(0, 10), until: lastDay };
  $("bucket-label").textContent = "per " + data.bucket;
  $("total-cost").textContent = usd(data.total.cost_usd);
  $("total-requests").textContent = count(data.total.requests);
  $("total-tokens").textContent = count(tokens(data.total));
  $("total-unpriced").textContent = count(data.total.unpriced_requests);
  const colors = new Map(data.teams.map((t, i) => [t.group, COLORS[i % COLORS.length]]));
  drawTeamChart(data.series, colors, data.bucket);
  fillTeams(data.teams, colors);
  fillModels(data.models);
  fillTiers(data.tiers);
  fillProviders(data.providers);
  fillKeys(data.top_keys);
  fillBudgets(data.budgets);
  fillShadow(data.shadow || []);
}

// Stacked bars: one bar per hour or day, one segment per team.
function drawTeamChart(series, colors, bucket) {
  const box = $("team-chart");
  box.replaceChildren();
  const buckets = series.buckets;
  if (series.teams.length === 0) {
    box.append(el("p", { class: "muted empty" }, "No spend in this range."));
    return;
  }
  const width = 960, height = 280, left = 70, right = 10, top = 10, bottom = 40;
  const plotW = width - left - right, plotH = height - top - bottom;
  const sums = buckets.map((_, i) =>
    series.teams.reduce((sum, team) => sum + amount(team.cost_usd[i]), 0));
  const step = niceStep(Math.max(...sums));
  const max = 4 * step;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "Spend per team per " + bucket });
  for (let i = 0; i <= 4; i++) {
    const value = step * i;
    const y = top + plotH - (plotH * i) / 4;
    chart.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: left - 6, y: y + 4, class: "tick", "text-anchor": "end" });
    label.textContent = "$" + tick(value);
    chart.append(label);
  }
  const slot = plotW / buckets.length;
  const barW = Math.max(1, slot * 0.8);
  const every = Math.ceil(buckets.length / 12);
  buckets.forEach((name, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    for (const team of series.teams) {
      const value = amount(team.cost_usd[i]);
      if (value <= 0) continue;
      const h = (value / max) * plotH;
      y -= h;
      const rect = svg("rect", { x, y, width: barW, height: Math.max(h, 0.5),
        fill: colors.get(team.team), "data-team": team.team, "data-bucket": name });
      const title = svg("title");
      title.textContent = `${team.team} · ${name}: ${usd(team.cost_usd[i])}`;
      rect.append(title);
      chart.append(rect);
    }
    if (i % every === 0) {
      const label = svg("text", { x: x + barW / 2, y: height - bottom + 16, class: "tick",
        "text-anchor": "middle" });
      label.textContent = bucket === "hour" ? name.slice(11, 16) : name.slice(5, 10);
      chart.append(label);
    }
  });
  box.append(chart);
}

// A round step (1, 2, 2.5 or 5 times a power of ten) so that four steps reach `value`.
function niceStep(value) {
  if (!(value > 0)) return 0.25;
  const raw = value / 4;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function tick(value) {
  return String(parseFloat(value.toPrecision(3)));
}

function fillTeams(teams, colors) {
  const body = $("teams").tBodies[0];
  body.replaceChildren();
  for (const team of teams) {
    const row = el("tr", { "data-team": team.group });
    const swatch = el("td");
    const dot = el("span", { class: "swatch" });
    dot.style.background = colors.get(team.group);
    swatch.append(dot);
    row.append(swatch, el("td", { class: "name" }, team.group),
      el("td", { class: "num requests" }, count(team.requests)),
      el("td", { class: "num tokens" }, count(tokens(team))),
      el("td", { class: "num cost" }, usd(team.cost_usd)));
    body.append(row);
  }
  if (teams.length === 0) body.append(emptyRow(5));
}

function emptyRow(span) {
  const row = el("tr");
  row.append(el("td", { colspan: span, class: "muted" }, "Nothing in this range."));
  return row;
}

// A label, a bar filled to `percent` (capped at 100), and a figure.
function barRow(attrs, label, percent, figure, detail, level) {
  const row = el("div", Object.assign({ class: "bar-row" + (level ? " " + level : "") }, attrs));
  const track = el("div", { class: "track" });
  const fill = el("div", { class: "fill" });
  fill.style.width = Math.max(0, Math.min(100, percent)) + "%";
  track.append(fill);
  row.append(el("div", { class: "label" }, label), track, el("div", { class: "figure" }, figure));
  if (detail) row.append(el("div", { class: "detail muted" }, detail));
  return row;
}

function fillModels(models) {
  const box = $("models");
  box.replaceChildren();
  const max = Math.max(0, ...models.map((m) => amount(m.cost_usd)));
  for (const model of models) {
    const detail = `${plural(model.requests, "request")} · ${plural(tokens(model), "token")}` +
      (model.unpriced_requests ? ` · ${count(model.unpriced_requests)} unpriced` : "");
    box.append(barRow({ "data-model": model.group }, model.group || "(unknown)",
      max > 0 ? (100 * amount(model.cost_usd)) / max : 0, usd(model.cost_usd), detail));
  }
  if (models.length === 0) box.append(el("p", { class: "muted" }, "Nothing in this range."));
}

// Spend per service tier that served it: default, flex, priority… ("(none)": batch and
// training rows, and rows recorded before tiers were).
function fillTiers(tiers) {
  const box = $("tiers");
  box.replaceChildren();
  const max = Math.max(0, ...tiers.map((t) => amount(t.cost_usd)));
  for (const tier of tiers) {
    const detail = `${plural(tier.requests, "request")} · ${plural(tokens(tier), "token")}`;
    box.append(barRow({ "data-tier": tier.group }, tier.group,
      max > 0 ? (100 * amount(tier.cost_usd)) / max : 0, usd(tier.cost_usd), detail));
  }
  if (tiers.length === 0) box.append(el("p", { class: "muted" }, "Nothing in this range."));
}

// Spend per kind of upstream that served it: openai, azure, anthropic, gemini,
// openai_compatible (rows recorded before providers were count as openai's).
function fillProviders(providers) {
  const box = $("providers");
  box.replaceChildren();
  const max = Math.max(0, ...providers.map((p) => amount(p.cost_usd)));
  for (const provider of providers) {
    const detail = `${plural(provider.requests, "request")} · ${plural(tokens(provider), "token")}`;
    box.append(barRow({ "data-provider": provider.group }, provider.group,
      max > 0 ? (100 * amount(provider.cost_usd)) / max : 0, usd(provider.cost_usd), detail));
  }
  if (providers.length === 0) box.append(el("p", { class: "muted" }, "Nothing in this range."));
}

function fillKeys(keys) {
  const body = $("keys").tBodies[0];
  body.replaceChildren();
  keys.forEach((key, i) => {
    const row = el("tr", { "data-key": key.group });
    const prefix = el("td", { class: "prefix" });
    prefix.append(el("code", {}, key.group));
    row.append(el("td", { class: "num" }, String(i + 1)), prefix,
      el("td", { class: "name" }, key.name || "—"),
      el("td", { class: "team" }, key.team || "—"),
      el("td", { class: "num requests" }, count(key.requests)),
      el("td", { class: "num tokens" }, count(tokens(key))),
      el("td", { class: "num cost" }, usd(key.cost_usd)));
    body.append(row);
  });
  if (keys.length === 0) body.append(emptyRow(7));
}

function fillBudgets(budgets) {
  const box = $("budgets");
  box.replaceChildren();
  for (const budget of budgets) {
    const percent = parseFloat(budget.used_percent);
    const level = percent >= 100 ? "over" : percent >= 80 ? "warn" : "";
    const who = budget.scope + " " + budget.name;
    const owner = budget.scope === "key" ? ` · ${budget.key_prefix} in team ${budget.team}` : "";
    const resets = budget.resets_at_ms
      ? " · resets " + new Date(budget.resets_at_ms).toISOString().slice(0, 16).replace("T", " ") + " UTC"
      : "";
    const inFlight = amount(budget.reserved_usd) > 0 ? ` (+${usd(budget.reserved_usd)} in flight)` : "";
    const detail = `${usd(budget.spent_usd)}${inFlight} of ${usd(budget.budget_usd)} ` +
      `${budget.budget_period}${resets}${owner}`;
    box.append(barRow({ "data-scope": budget.scope, "data-name": budget.name }, who,
      percent, budget.used_percent + "%", detail, level));
  }
  if (budgets.length === 0) box.append(el("p", { class: "muted" }, "No team or key has a budget."));
}

// Agreement as a percentage with its counts: "95.0% (19 / 20)", or a dash.
function agreement(rate, matches, of) {
  if (rate === null || rate === undefined) return "—";
  return `${(parseFloat(rate) * 100).toFixed(1)}% (${count(matches)} / ${count(of)})`;
}

function fillShadow(lines) {
  const body = $("shadow").tBodies[0];
  body.replaceChildren();
  for (const line of lines) {
    const row = el("tr", { "data-model": line.model, "data-candidate": line.candidate });
    row.append(el("td", { class: "name" }, line.model),
      el("td", { class: "candidate" }, line.candidate),
      el("td", { class: "num requests" }, count(line.requests)),
      el("td", { class: "num model-cost" }, usd(line.model_cost_per_request_usd)),
      el("td", { class: "num candidate-cost" }, usd(line.candidate_cost_per_request_usd)),
      el("td", { class: "num text-agreement" },
        agreement(line.text_agreement, line.text_matches, line.compared)),
      el("td", { class: "num value-agreement" },
        agreement(line.value_agreement, line.value_matches, line.value_compared)));
    body.append(row);
  }
  if (lines.length === 0) body.append(emptyRow(7));
}

// OpenAI's figures for today are still arriving: compare whole days up to yesterday.
function reconcileDays() {
  if (!shownDays) return null;
  const yesterday = new Date(Date.now() - DAY_MS).toISOString().slice(0, 10);
  const until = shownDays.until < yesterday ? shownDays.until : yesterday;
  return until < shownDays.since ? null : { since: shownDays.since, until };
}

async function reconcile() {
  const panel = $("reconcile");
  const key = sessionStorage.getItem(STORAGE_KEY);
  const days = reconcileDays();
  $("reconcile-error").textContent = "";
  $("reconcile-summary").textContent = "";
  $("reconcile-lines").hidden = true;
  if (!key) return showSignIn();
  if (!days) {
    $("reconcile-error").textContent = "Pick a range with a whole day before today.";
    panel.dataset.state = "error";
    return;
  }
  panel.dataset.state = "loading";
  const params = new URLSearchParams({ since: days.since, until: days.until, by: "model" });
  let response, body = null;
  try {
    response = await fetch("/admin/reconcile?" + params.toString(), {
      headers: { Authorization: "Bearer " + key },
      cache: "no-store",
      credentials: "omit",
    });
    body = await response.json();
  } catch (error) {
    $("reconcile-error").textContent = "Cannot reach tollgate: " + error.message;
    panel.dataset.state = "error";
    return;
  }
  if (response.status === 401 || response.status === 403) return showSignIn(body.error.message);
  if (!response.ok) {
    $("reconcile-error").textContent = body && body.error ? body.error.message : "HTTP " + response.status;
    panel.dataset.state = "error";
    return;
  }
  fillReconcile(body);
  panel.dataset.state = "ready";
}

const percent = (p) => (p === null ? "n/a" : parseFloat(p).toFixed(2) + "%");
const money = (exact) => (exact === null ? "—" : usd(exact));

// Input plus output tokens of each side, as a percentage of OpenAI's.
function tokensPercent(line) {
  const sum = (side) => (line.input_tokens[side] || 0) + (line.output_tokens[side] || 0);
  const provider = sum("provider");
  if (provider === 0) return "n/a";
  return ((100 * (sum("tollgate") - provider)) / provider).toFixed(2) + "%";
}

function reconcileRow(line, name, total) {
  const status = line.only === "provider" ? "only in OpenAI's export"
    : line.only === "tollgate" ? "only in tollgate"
    : line.within_tolerance ? "within" : "outside";
  const row = el("tr", { class: (total ? "total " : "") + (line.within_tolerance ? "within" : "outside"),
    "data-model": name });
  const diff = line.usd.diff.startsWith("-") ? "-$" + line.usd.diff.slice(1) : "+$" + line.usd.diff;
  const state = el("td", { class: "status" }, status);
  if (line.note) state.title = line.note.message;
  row.append(el("td", { class: "name" }, name),
    el("td", { class: "num provider" }, money(line.usd.provider)),
    el("td", { class: "num tollgate" }, money(line.usd.tollgate)),
    el("td", { class: "num diff" }, diff),
    el("td", { class: "num percent" }, percent(line.usd.diff_percent)),
    el("td", { class: "num tokens" }, tokensPercent(line)), state);
  return row;
}

function fillReconcile(report) {
  const body = $("reconcile-lines").tBodies[0];
  body.replaceChildren();
  for (const line of report.lines) body.append(reconcileRow(line, line.model || "(no model)", false));
  body.append(reconcileRow(report.total, "Total", true));
  $("reconcile-lines").hidden = false;
  const outside = report.lines_out_of_tolerance;
  let summary = `${report.since} to ${report.until}: ` + (outside === 0
    ? `every line within ${report.tolerance_percent}%`
    : `${plural(outside, "line")} of ${report.lines.length} outside ${report.tolerance_percent}%`);
  if (amount(report.unmetered_usd) !== 0) {
    summary += ` · ${usd(report.unmetered_usd)} of OpenAI charges tollgate does not meter`;
  }
  $("reconcile-summary").textContent = summary;
}

// The date pickers name whole UTC days; `to` is inclusive, so ask up to the next midnight.
function applyDates() {
  const from = $("from").value, to = $("to").value;
  if (!from || !to) {
    $("error").textContent = "Pick both dates.";
    return;
  }
  const next = new Date(Date.parse(to + "T00:00:00Z") + DAY_MS).toISOString().slice(0, 10);
  range = { from, to: next };
  load();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(STORAGE_KEY, key);
    $("admin-key").value = "";
    load();
  });
  $("sign-out").addEventListener("click", () => showSignIn());
  for (const button of document.querySelectorAll("[data-span]")) {
    button.addEventListener("click", () => {
      range = { from: button.dataset.span, to: null };
      load();
    });
  }
  $("apply").addEventListener("click", applyDates);
  $("reconcile-run").addEventListener("click", reconcile);
  load();
});
