// The platform's web UI: plain JavaScript, no build step, no network beyond this origin.
"use strict";

const POLL_MS = 2000;
let pollTimer = null;

// -- helpers ------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;  // CSSOM: allowed by the UI's CSP
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children.flat()) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

class ApiError extends Error {
  constructor(status, code, message, body) { super(message); this.status = status; this.code = code; this.body = body; }
}

// Requests carry the platform's API token, kept for this browser session only (sessionStorage:
// gone when the tab closes, never visible to other origins). `aip up` prints a login URL with the
// token in its fragment (#token=...), which the browser never sends to a server: it is taken from
// there and removed from the address bar at once. Otherwise a 401 asks for the token and retries.
const TOKEN_KEY = "aip-api-token";
const tokenStore = window.sessionStorage;
let tokenDeclined = false;
(function takeTokenFromLoginUrl() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return;
  tokenStore.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search + "#training");
})();
const authHeaders = () => (tokenStore.getItem(TOKEN_KEY) ? { Authorization: `Bearer ${tokenStore.getItem(TOKEN_KEY)}` } : {});

async function api(method, path, body, isForm, retried) {
  const sentToken = tokenStore.getItem(TOKEN_KEY);
  const options = { method, headers: authHeaders() };
  if (body !== undefined) {
    if (isForm) options.body = body;
    else { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  }
  let response;
  try { response = await fetch(path, options); }
  catch (err) { throw new ApiError(0, "unavailable", `The platform cannot be reached (${err.message})`); }
  if (response.status === 401 && !retried && tokenStore.getItem(TOKEN_KEY) && tokenStore.getItem(TOKEN_KEY) !== sentToken) {
    return api(method, path, body, isForm, true);  // another request asked for the token meanwhile
  }
  if (response.status === 401 && !retried && !tokenDeclined) {
    const token = prompt("This platform needs an API token (AIP_API_TOKEN):");
    if (token) { tokenStore.setItem(TOKEN_KEY, token.trim()); return api(method, path, body, isForm, true); }
    tokenDeclined = true;  // no prompt from every poll after a cancel; a reload asks again
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const message = (data && (data.message || data.error)) || text || response.statusText;
    throw new ApiError(response.status, data && data.error, `${message} (HTTP ${response.status})`, data);
  }
  return data;
}

// Images and downloads cannot send a header by themselves: with a token they are fetched first.
function authedImage(url, attrs) {
  if (!tokenStore.getItem(TOKEN_KEY)) return h("img", { ...attrs, src: url });
  const img = h("img", attrs);
  fetch(url, { headers: authHeaders() }).then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); });
  return img;
}

function authedDownload(url, filename, label) {
  return h("a", { class: "button", href: url, download: filename, onclick: (e) => {
    if (!tokenStore.getItem(TOKEN_KEY)) return;
    e.preventDefault();
    act(null, async () => {
      const response = await fetch(url, { headers: authHeaders() });
      if (!response.ok) throw new ApiError(response.status, null, `Download failed (HTTP ${response.status})`);
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: filename });
      link.click();
    });
  } }, label);
}

function showError(err) {
  const box = document.getElementById("error");
  document.getElementById("error-text").textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}
function clearError() { document.getElementById("error").hidden = true; }
function notify(message) {
  const box = document.getElementById("notice");
  box.textContent = message; box.hidden = false;
  setTimeout(() => { box.hidden = true; }, 4000);
}

// Run an action from a button: errors go to the banner, the button is disabled meanwhile.
async function act(button, action) {
  clearError();
  if (button) button.disabled = true;
  try { return await action(); }
  catch (err) { showError(err); return undefined; }
  finally { if (button) button.disabled = false; }
}

const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const fmtNum = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "–");
const page = () => document.getElementById("page");

function progressBar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("span", { class: "row" }, h("span", { class: "bar" }, h("i", { style: `width:${pct.toFixed(0)}%` })), label || "");
}

// -- charts -------------------------------------------------------------------------------
function lineChart(title, series, { width = 420, height = 220 } = {}) {
  const pad = { l: 44, r: 10, t: 22, b: 28 };
  const points = series.flatMap((sr) => sr.points);
  const svg = s("svg", { width, height, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("text", { x: pad.l, y: 14 }, title));
  if (!points.length) { svg.append(s("text", { x: pad.l, y: height / 2 }, "no epochs yet")); return svg; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  svg.append(s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#aab4c0" }));
  svg.append(s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#aab4c0" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) svg.append(s("text", { x: 2, y: Y(y) + 4 }, y.toFixed(3)));
  for (const x of [...new Set(xs)]) svg.append(s("text", { x: X(x) - 3, y: height - 10 }, x));
  const colors = ["#1f6feb", "#e5534b", "#2da44e"];
  series.forEach((sr, i) => {
    if (!sr.points.length) return;
    const d = sr.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, fill: "none", stroke: colors[i % colors.length], "stroke-width": 2, class: "series" }));
    for (const p of sr.points) svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: colors[i % colors.length] }));
    svg.append(s("text", { x: width - pad.r - 120, y: 14 + 12 * i, fill: colors[i % colors.length] }, sr.name));
  });
  return svg;
}

function barChart(title, values, labels, { width = 420, height = 180 } = {}) {
  const pad = { l: 10, r: 10, t: 22, b: 20 };
  const svg = s("svg", { width, height, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("text", { x: pad.l, y: 14 }, title));
  const max = Math.max(...values, 1e-9), w = (width - pad.l - pad.r) / Math.max(1, values.length);
  values.forEach((v, i) => {
    const bh = (v / max) * (height - pad.t - pad.b);
    svg.append(s("rect", { x: pad.l + i * w + 1, y: height - pad.b - bh, width: Math.max(1, w - 2), height: bh, fill: "#1f6feb" }));
    if (labels) svg.append(s("text", { x: pad.l + i * w + w / 2 - 4, y: height - 6 }, labels[i]));
  });
  return svg;
}

// -- schema-generated form ------------------------------------------------------------------
function fieldSpec(prop) {
  // Optional[...] arrives as anyOf [X, null]
  if (prop.anyOf) {
    const inner = prop.anyOf.find((p) => p.type !== "null") || {};
    return { ...inner, ...prop, anyOf: undefined, type: inner.type, optional: true };
  }
  return { ...prop };
}

function schemaField(name, prop) {
  const spec = fieldSpec(prop);
  const hint = [spec.description, spec.minimum !== undefined ? `min ${spec.minimum}` : null,
    spec.exclusiveMinimum !== undefined ? `> ${spec.exclusiveMinimum}` : null,
    spec.maximum !== undefined ? `max ${spec.maximum}` : null,
    spec.exclusiveMaximum !== undefined ? `< ${spec.exclusiveMaximum}` : null].filter(Boolean).join("; ");
  let input;
  if (spec.enum) {
    input = h("select", { name }, spec.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === spec.default }, String(v))));
  } else if (spec.type === "boolean") {
    input = h("input", { type: "checkbox", name, checked: spec.default === true });
  } else if (spec.type === "integer" || spec.type === "number") {
    input = h("input", { type: "text", inputmode: "decimal", name, value: spec.default ?? "", placeholder: spec.optional ? "(none)" : "" });
  } else if (spec.type === "array") {
    input = h("input", { type: "text", name, value: (spec.default || []).join(", "), placeholder: "comma-separated" });
  } else {
    input = h("input", { type: "text", name, value: spec.default ?? "" });
  }
  input.dataset.kind = spec.enum ? "enum" : spec.type || "string";
  if (spec.type === "array") input.dataset.items = (spec.items && spec.items.type) || "string";
  input.dataset.default = JSON.stringify(spec.default ?? null);
  input.id = `param-${name}`;
  return h("label", { for: input.id }, h("span", { class: "name" }, spec.title || name), input, hint ? h("small", {}, hint) : null);
}

function readNumber(raw) { const n = Number(raw); return raw.trim() !== "" && Number.isFinite(n) ? n : raw; }

// Only values that differ from the schema's defaults are sent; the server validates them all.
function readParams(form) {
  const params = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    let value;
    const kind = input.dataset.kind;
    if (kind === "boolean") value = input.checked;
    else if (kind === "enum") value = JSON.parse(input.value);
    else if (kind === "integer" || kind === "number") { if (input.value.trim() === "") continue; value = readNumber(input.value); }
    else if (kind === "array") {
      const parts = input.value.split(",").map((p) => p.trim()).filter(Boolean);
      value = input.dataset.items === "string" ? parts : parts.map(readNumber);
    } else value = input.value;
    if (JSON.stringify(value) !== input.dataset.default) params[input.name] = value;
  }
  return params;
}

// -- training ---------------------------------------------------------------------------------
async function trainingPage() {
  const root = page();
  const formCard = h("section", { class: "card", id: "create-card", hidden: true });
  const list = h("tbody", { id: "task-rows" });
  const counts = h("span", { class: "muted", id: "task-counts" });
  root.replaceChildren(
    h("div", { class: "row" }, h("h2", {}, "Training tasks"),
      h("button", { class: "primary", id: "new-task", onclick: () => openCreateForm(formCard) }, "Create new task"), counts),
    formCard,
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Task", "Template", "Model", "State", "Progress", "Val. accuracy", "Created", ""].map((t) => h("th", {}, t)))),
      list)),
  );
  const refresh = async () => {
    try {
      const data = await api("GET", "/v1/tasks?limit=50");
      counts.textContent = `waiting ${data.counts.waiting} · running ${data.counts.running} · finished ${data.counts.finished}`;
      list.replaceChildren(...data.tasks.map(taskRow));
      if (!data.tasks.length) list.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No tasks yet: create one.")));
    } catch (err) { showError(err); }
  };
  await refresh();
  poll(refresh);
}

function taskProgress(task) {
  const p = task.progress || {};
  if (!p.epochs) return task.state === "RUNNING" ? "starting…" : "";
  return progressBar(p.epoch / p.epochs, `epoch ${p.epoch}/${p.epochs}`);
}

function taskActions(task, after) {
  const buttons = [];
  if (task.state === "CREATED") buttons.push(h("button", { class: "primary", "data-action": "start", onclick: (e) => act(e.target, async () => { await api("POST", `/v1/tasks/${task.id}/start`); notify(`Task ${task.id} queued`); after(); }) }, "Start training"));
  if (["CREATED", "QUEUED", "RUNNING"].includes(task.state)) buttons.push(h("button", { "data-action": "cancel", onclick: (e) => act(e.target, async () => { await api("POST", `/v1/tasks/${task.id}/cancel`); notify(`Task ${task.id} cancelled`); after(); }) }, "Cancel"));
  return buttons;
}

function taskRow(task) {
  const metrics = (task.progress && task.progress.metrics) || {};
  return h("tr", { "data-task": task.id },
    h("td", {}, h("a", { href: `#task/${task.id}` }, task.id)),
    h("td", {}, task.template),
    h("td", {}, task.result ? h("a", { href: `#models/${task.result.model}` }, `${task.result.model} v${task.result.version}`) : (task.model_name || "")),
    h("td", {}, h("span", { class: `state state-${task.state}`, "data-state": task.state }, task.cancel_requested && task.state === "RUNNING" ? "CANCELLING" : task.state)),
    h("td", {}, taskProgress(task)),
    h("td", {}, fmtNum(metrics.val_accuracy)),
    h("td", {}, fmtTime(task.created_at)),
    h("td", {}, taskActions(task, () => route())));
}

async function openCreateForm(card) {
  await act(null, async () => {
    const { templates } = await api("GET", "/v1/templates");
    const select = h("select", { id: "template-select" }, h("option", { value: "" }, "— pick a template —"),
      templates.map((t) => h("option", { value: t.name }, `${t.title} (${t.name})`)));
    const fields = h("div", { id: "template-fields" });
    const form = h("form", { id: "create-form" },
      h("label", {}, h("span", { class: "name" }, "Template"), select), fields);
    select.addEventListener("change", () => {
      const template = templates.find((t) => t.name === select.value);
      fields.replaceChildren();
      if (!template) return;
      fields.append(h("p", { class: "muted" }, template.description),
        h("label", {}, h("span", { class: "name" }, "Model name"), h("input", { type: "text", id: "model-name", placeholder: "default from the template" })),
        h("label", {}, h("span", { class: "name" }, "Priority"), h("input", { type: "text", id: "priority", value: "0" }), h("small", {}, "-100 … 100, higher starts first")),
        h("h3", {}, "Parameters"),
        ...Object.entries(template.schema.properties || {}).map(([name, prop]) => schemaField(name, prop)),
        h("div", { class: "row" },
          h("button", { class: "primary", type: "submit", id: "create-submit", value: "create" }, "Create"),
          h("button", { type: "submit", id: "create-start", value: "start" }, "Create and start"),
          h("button", { type: "button", onclick: () => { card.hidden = true; } }, "Close")));
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const start = event.submitter && event.submitter.value === "start";
      act(event.submitter, async () => {
        const body = { template: select.value, params: readParams(fields), start };
        const name = document.getElementById("model-name").value.trim();
        if (name) body.model_name = name;
        body.priority = readNumber(document.getElementById("priority").value);
        const task = await api("POST", "/v1/tasks", body);
        notify(`Task ${task.id} created${start ? " and queued" : ""}`);
        card.hidden = true;
        route();
      });
    });
    card.replaceChildren(h("h3", {}, "Create new task"), form);
    card.hidden = false;
  });
}

async function taskPage(taskId) {
  const root = page();
  const info = h("div", { id: "task-info" });
  const charts = h("div", { class: "charts", id: "task-charts" });
  const logs = h("pre", { class: "logs", id: "task-logs" }, "");
  root.replaceChildren(h("p", {}, h("a", { href: "#training" }, "← all tasks")),
    h("h2", {}, `Task ${taskId}`), h("section", { class: "card" }, info),
    h("section", { class: "card" }, h("h3", {}, "Curves"), charts),
    h("section", { class: "card" }, h("h3", {}, "Logs"), logs));
  const refresh = async () => {
    try {
      const task = await api("GET", `/v1/tasks/${taskId}`);
      const { history } = await api("GET", `/v1/tasks/${taskId}/metrics`);
      info.replaceChildren(
        h("div", { class: "row" }, h("span", { class: `state state-${task.state}`, id: "task-state", "data-state": task.state }, task.state),
          taskProgress(task), ...taskActions(task, refresh)),
        h("table", {}, h("tbody", {},
          [["Template", task.template], ["Parameters", h("code", {}, JSON.stringify(task.params))],
           ["Priority", task.priority], ["Ray job", task.ray_job_id || "–"], ["Attempts", task.attempts],
           ...(task.waiting ? [["Waiting", h("span", { id: "task-waiting" }, task.waiting)]] : []),
           ["Created", fmtTime(task.created_at)], ["Started", fmtTime(task.started_at)], ["Finished", fmtTime(task.finished_at)],
           ["Result", task.result ? h("span", {}, h("a", { href: `#models/${task.result.model}` }, `${task.result.model} v${task.result.version}`),
             `  test accuracy ${fmtNum(task.result.test_accuracy)}`) : "–"],
           ["Error", task.error ? `${task.error_reason || ""}: ${task.error}` : "–"]].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))));
      const series = (key) => history.filter((m) => typeof m[key] === "number").map((m) => [m.epoch, m[key]]);
      charts.replaceChildren(
        lineChart("loss", [{ name: "train loss", points: series("train_loss") }, { name: "val loss", points: series("val_loss") }]),
        lineChart("accuracy", [{ name: "val accuracy", points: series("val_accuracy") }]));
      // Ray colours its log prefixes for terminals; a page shows them plain.
      try { logs.textContent = (await api("GET", `/v1/tasks/${taskId}/logs?tail=400`)).logs.replace(/\x1b\[[0-9;]*m/g, ""); }
      catch (err) { logs.textContent = err.status === 404 ? "(no logs yet)" : err.message; }
      if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(task.state)) stopPolling();
    } catch (err) { showError(err); stopPolling(); }
  };
  await refresh();
  poll(refresh);
}

// -- inference --------------------------------------------------------------------------------
async function inferencePage() {
  const root = page();
  const modelSelect = h("select", { id: "model-select" });
  const targetSelect = h("select", { id: "target-select" });
  const fileInput = h("input", { type: "file", id: "file-input", accept: ".png,.jpg,.jpeg,.bmp,.gif,.txt,.md" });
  const text = h("textarea", { id: "text-input", placeholder: "…or paste text here" });
  const output = h("div", { id: "prediction" });
  const history = h("tbody", { id: "result-rows" });
  root.replaceChildren(h("h2", {}, "Inference"),
    h("section", { class: "card" },
      h("div", { class: "row" }, h("label", {}, "Model ", modelSelect), h("label", {}, "Version ", targetSelect)),
      h("label", {}, "File ", fileInput), text,
      h("div", { class: "row" }, h("button", { class: "primary", id: "predict", onclick: (e) => act(e.target, predict) }, "Predict")),
      output),
    h("section", { class: "card" }, h("h3", {}, "Past results"), h("table", {},
      h("thead", {}, h("tr", {}, ["Result", "Model", "Label", "Probability", "Latency", "Time"].map((t) => h("th", {}, t)))), history)));

  const { models } = await api("GET", "/v1/models").catch((err) => { showError(err); return { models: [] }; });
  if (!models.length) modelSelect.append(h("option", { value: "" }, "no models yet: train one"));
  for (const m of models) modelSelect.append(h("option", { value: m.name }, m.name));
  const fillTargets = async () => {
    const name = modelSelect.value;
    // The previous model's versions go at once: a predict sent before this model's arrive must not
    // pair this model with another one's alias or version (it gets the server's default instead).
    targetSelect.replaceChildren();
    delete targetSelect.dataset.model;
    if (!name) return;
    const model = await api("GET", `/v1/models/${encodeURIComponent(name)}`);
    // A later choice may have been made while this one loaded: only the current model's answer counts.
    if (modelSelect.value !== name) return;
    targetSelect.replaceChildren(
      ...Object.keys(model.aliases).map((alias) => h("option", { value: `alias=${alias}` }, `${alias} (v${model.aliases[alias]})`)),
      ...model.versions.map((v) => h("option", { value: `version=${v.version}` }, `v${v.version}`)));
    targetSelect.dataset.model = name;
    await refreshResults();
  };
  const refreshResults = async () => {
    const name = modelSelect.value;
    const { results } = await api("GET", `/v1/results?limit=20${name ? `&model=${encodeURIComponent(name)}` : ""}`);
    history.replaceChildren(...results.map((r) => h("tr", {},
      h("td", {}, h("code", {}, r.id.slice(0, 12))), h("td", {}, `${r.model} v${r.version}`),
      h("td", {}, r.output.label), h("td", {}, fmtNum(r.output.probability, 3)),
      h("td", {}, `${r.latency_ms.toFixed(1)} ms`), h("td", {}, fmtTime(r.created_at)))));
  };
  modelSelect.addEventListener("change", () => act(null, fillTargets));
  await act(null, fillTargets);
  // Results are written off the request path, a moment after the answer: keep the list fresh.
  poll(() => refreshResults().catch(showError));

  async function predict() {
    const name = modelSelect.value;
    if (!name) throw new Error("Choose a model first");
    const query = targetSelect.value ? `?${targetSelect.value}` : "";
    const path = `/v1/models/${encodeURIComponent(name)}/predict${query}`;
    // The previous answer goes at once, so that nothing on the page belongs to an older request.
    output.replaceChildren(h("p", { class: "muted", id: "predicting" }, "Predicting…"));
    let answer;
    try {
      if (fileInput.files.length) {
        const form = new FormData();
        form.append("file", fileInput.files[0]);
        answer = await api("POST", path, form, true);
      } else if (text.value.trim()) {
        answer = await api("POST", path, { text: text.value });
      } else {
        throw new Error("Upload a file or paste some text first");
      }
    } catch (error) {
      output.replaceChildren();
      throw error;
    }
    const probs = Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]);
    output.replaceChildren(
      h("p", {}, "Prediction: ", h("span", { class: "prediction", id: "predicted-label" }, answer.label),
        h("span", { class: "muted" }, `  ${(answer.probability * 100).toFixed(1)}% · ${answer.model} v${answer.version} · ${answer.latency_ms.toFixed(1)} ms`)),
      h("table", { class: "probs" }, h("tbody", {}, probs.map(([label, p]) =>
        h("tr", { "data-label": label, "data-probability": p }, h("td", {}, label),
          h("td", {}, progressBar(p, `${(p * 100).toFixed(2)}%`)))))),
      answer.chunks ? h("div", { id: "chunks" }, h("h3", {}, `Per chunk (${answer.chunks.length} chunks; the document's probabilities are their word-weighted mean)`),
        h("table", {}, h("thead", {}, h("tr", {}, ["#", "Words", "Label", "Probability", "Text"].map((t) => h("th", {}, t)))),
          h("tbody", {}, answer.chunks.map((c) => h("tr", { "data-chunk": c.index },
            h("td", {}, c.index + 1), h("td", {}, c.words), h("td", {}, c.label), h("td", {}, fmtNum(c.probability, 3)),
            h("td", { class: "muted" }, c.text + (c.text.length >= 160 ? "…" : ""))))))) : null);
    await refreshResults();
  }
}

// -- models -----------------------------------------------------------------------------------
async function modelsPage(selected) {
  const root = page();
  const { models } = await api("GET", "/v1/models");
  const detail = h("div", { id: "model-detail" });
  root.replaceChildren(h("h2", {}, "Models"),
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Model", "Versions", "Latest", "Aliases"].map((t) => h("th", {}, t)))),
      h("tbody", {}, models.map((m) => h("tr", {},
        h("td", {}, h("a", { href: `#models/${m.name}` }, m.name)), h("td", {}, m.versions), h("td", {}, m.latest_version),
        h("td", {}, Object.entries(m.aliases).map(([a, v]) => `${a} → v${v}`).join(", "))))))),
    detail);
  if (!models.length) detail.append(h("p", { class: "muted" }, "No models yet: a training task registers one."));
  if (selected) await modelDetail(detail, selected);
}

async function modelDetail(root, name) {
  const model = await api("GET", `/v1/models/${encodeURIComponent(name)}`);
  const reload = () => modelDetail(root, name);
  const report = h("div", { id: "compression-report" });
  const rows = model.versions.map((v) => {
    const lineage = v.lineage || {};
    return h("tr", { "data-version": v.version },
      h("td", {}, `v${v.version}`), h("td", {}, fmtNum(v.metrics.test_accuracy)),
      h("td", {}, v.aliases.join(", ")), h("td", {}, fmtTime(v.created_at)),
      h("td", {}, [lineage.method, lineage.task_id ? h("a", { href: `#task/${lineage.task_id}` }, `task ${lineage.task_id}`) : null,
        lineage.dataset, lineage.parent ? `parent v${lineage.parent}` : null].filter(Boolean).flatMap((x) => [x, " "])),
      h("td", {},
        h("button", { "data-action": "promote", onclick: (e) => act(e.target, async () => {
          const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/promote`, { version: v.version });
          notify(r.message); reload(); }) }, "Promote to production"), " ",
        h("button", { "data-action": "alias", onclick: (e) => act(e.target, async () => {
          const alias = prompt("Alias to point at this version (e.g. staging)");
          if (!alias) return;
          const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/promote`, { version: v.version, alias });
          notify(r.message); reload(); }) }, "Set alias…"), " ",
        authedDownload(`/v1/models/${encodeURIComponent(name)}/versions/${v.version}/package`, `${name}-v${v.version}.zip`, "Download"), " ",
        compressControl(name, v.version, report, reload)));
  });
  root.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row" }, h("h3", {}, name),
      h("button", { id: "rollback", onclick: (e) => act(e.target, async () => {
        const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/rollback`); notify(r.message); reload(); }) }, "Roll back production")),
    h("table", {}, h("thead", {}, h("tr", {}, ["Version", "Test accuracy", "Aliases", "Created", "Lineage", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))), report);
}

// Compress one version: the method, a button, and the report (also when the gate refuses).
function compressControl(name, version, reportBox, reload) {
  const method = h("select", { "data-compress-method": version },
    ["int8", "fp16", "prune:0.3", "prune:0.5"].map((m) => h("option", { value: m }, m)));
  const button = h("button", { "data-action": "compress", onclick: (e) => act(e.target, async () => {
    reportBox.replaceChildren(h("p", { class: "muted", id: "compressing" }, `Compressing v${version} (${method.value})…`));
    try {
      const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/compress`, { version, method: method.value });
      notify(r.message);
      await reload();  // the new version's row; the page's report box is a new one after it
      document.getElementById("compression-report").replaceChildren(compressionReport(r.report));
    } catch (err) {
      reportBox.replaceChildren(err.body && err.body.report ? compressionReport(err.body.report) : "");
      throw err;
    }
  }) }, "Compress");
  return h("span", { class: "compress" }, method, " ", button);
}

function compressionReport(r) {
  const row = (what, before, after, change) => h("tr", {}, h("td", {}, what), h("td", {}, before), h("td", {}, after), h("td", {}, change));
  const m = r.metrics;
  return h("section", { class: "card", "data-report": r.method },
    h("h3", {}, `Compression of v${r.parent_version} with ${r.method}: `,
      r.registered ? h("span", { id: "compressed-version" }, `registered as v${r.version}`) : h("span", { class: "refused" }, `refused — ${r.refused}`)),
    h("table", {}, h("thead", {}, h("tr", {}, ["", "Before", "After", "Change"].map((t) => h("th", {}, t)))),
      h("tbody", {},
        row("Package size", `${(r.size_bytes.before / 1024).toFixed(0)} KiB`, `${(r.size_bytes.after / 1024).toFixed(0)} KiB`, `${(r.derived.size_ratio * 100).toFixed(1)}%`),
        row("Latency, batch 1", `${fmtNum(r.latency_ms.batch_1.before, 3)} ms`, `${fmtNum(r.latency_ms.batch_1.after, 3)} ms`, `${r.derived.speedup_batch_1.toFixed(2)}x faster`),
        row("Latency, batch 32", `${fmtNum(r.latency_ms.batch_32.before, 3)} ms`, `${fmtNum(r.latency_ms.batch_32.after, 3)} ms`, `${r.derived.speedup_batch_32.toFixed(2)}x faster`),
        row("Test accuracy", fmtNum(m.before.test_accuracy), fmtNum(m.after.test_accuracy), `${(-r.accuracy_drop * 100).toFixed(2)} points`),
        row("Test macro-F1", fmtNum(m.before.test_macro_f1), fmtNum(m.after.test_macro_f1), ""))),
    h("p", { class: "muted" }, `${m.after.test_samples} test samples of ${r.dataset}; gate: at most ${(r.max_accuracy_drop * 100).toFixed(2)} points lost`));
}

// -- datasets ---------------------------------------------------------------------------------
async function datasetsPage(selected) {
  const root = page();
  const { datasets } = await api("GET", "/v1/datasets");
  const detail = h("div", { id: "dataset-detail" });
  root.replaceChildren(h("h2", {}, "Datasets"),
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Version", "Rows (train / val / test)", "Classes", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, datasets.map((d) => h("tr", {},
        h("td", {}, h("a", { href: `#datasets/${d.name}/${d.version}` }, d.ref)),
        h("td", {}, ["train", "val", "test"].map((sp) => d.rows[sp] ?? 0).join(" / ")),
        h("td", {}, (d.labels || []).length), h("td", {}, fmtTime(d.created_at))))))),
    detail);
  if (!datasets.length) detail.append(h("p", { class: "muted" }, "No dataset versions yet: a training task builds one."));
  if (selected) {
    const [name, version] = selected.split("/");
    const profile = await api("GET", `/v1/datasets/${encodeURIComponent(name)}/${encodeURIComponent(version)}/profile`);
    const manifest = await api("GET", `/v1/datasets/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
    const train = profile.profile.train || {};
    detail.replaceChildren(h("section", { class: "card" }, h("h3", {}, profile.ref),
      h("p", {}, `content hash `, h("code", {}, manifest.content_hash), ` · source `, h("code", {}, manifest.spec.source)),
      h("div", { class: "charts" },
        barChart("train: images per class", profile.labels.map((label, i) => {
          const counts = profile.per_class.train || {};
          return Number(Array.isArray(counts) ? counts[i] : counts[label]) || 0;
        }), profile.labels),
        train.intensity_histogram ? barChart(`train: pixel intensity (mean ${fmtNum(train.mean_intensity, 3)}, std ${fmtNum(train.std_intensity, 3)})`, train.intensity_histogram) : null),
      h("h3", {}, "Manifest"), h("pre", { class: "logs" }, JSON.stringify({ ...manifest, splits: Object.fromEntries(
        Object.entries(manifest.splits).map(([k, v]) => [k, { rows: v.rows, files: v.files.length }])) }, null, 2))),
      await analysisSection(name, version));
  }
}

// The dataset's analysis (profile charts, duplicates, leakage) and a drift check against live inputs.
async function analysisSection(name, version) {
  const section = h("section", { class: "card", id: "analysis" }, h("h3", {}, "Analysis"));
  const profile = await api("GET", `/v1/analysis/datasets/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
  const splits = Object.entries(profile.splits);
  section.append(
    h("table", {}, h("thead", {}, h("tr", {}, ["Split", "Rows", "Duplicates"].map((t) => h("th", {}, t)))),
      h("tbody", {}, splits.map(([split, sp]) => h("tr", { "data-split": split }, h("td", {}, split), h("td", {}, sp.rows), h("td", {}, sp.duplicates))))),
    h("p", { id: "leakage" }, `Leakage between splits: ${profile.leakage.inputs_in_several_splits} inputs in more than one split `,
      h("span", { class: "muted" }, JSON.stringify(profile.leakage.pairs)),
      ` · largest/smallest class: ${profile.class_balance.imbalance_ratio}`),
    h("div", { class: "charts", id: "profile-charts" }, Object.entries(profile.chart_urls).map(([chart, url]) =>
      h("figure", {}, authedImage(url, { alt: chart, "data-chart-image": chart, class: chart.startsWith("mean_image") ? "mean-image" : "" }),
        h("figcaption", {}, chart.replaceAll("_", " "))))));
  const { models } = await api("GET", "/v1/models");
  const modelSelect = h("select", { id: "drift-model" }, models.map((m) => h("option", { value: m.name }, m.name)));
  const driftOut = h("div", { id: "drift-report" });
  section.append(h("h3", {}, "Drift of live inputs"),
    h("div", { class: "row" }, "Model ", modelSelect, " ",
      h("button", { id: "drift-run", onclick: (e) => act(e.target, async () => {
        driftOut.replaceChildren(h("p", { class: "muted" }, "Comparing…"));
        try {
          const r = await api("POST", "/v1/analysis/drift", { model: modelSelect.value, dataset: `${name}@${version}` });
          driftOut.replaceChildren(driftReport(r));
        } catch (err) { driftOut.replaceChildren(); throw err; }
      }) }, "Check drift")),
    driftOut);
  return section;
}

function driftReport(r) {
  return h("div", {},
    h("p", {}, "Verdict: ", h("strong", { id: "drift-verdict", class: `verdict-${r.verdict}` }, r.verdict),
      ` (PSI ${fmtNum(r.score, 3)}, worst: ${r.worst_feature}) over ${r.live_samples} recent predictions against ${r.dataset} (${r.split})`),
    h("table", {}, h("thead", {}, h("tr", {}, ["Feature", "PSI", "Verdict"].map((t) => h("th", {}, t)))),
      h("tbody", {}, Object.entries(r.features).map(([f, v]) => h("tr", { "data-feature": f },
        h("td", {}, f), h("td", {}, fmtNum(v.psi, 3)), h("td", {}, v.verdict))))),
    h("div", { class: "charts" }, Object.entries(r.chart_urls).map(([chart, url]) =>
      h("figure", {}, authedImage(url, { alt: chart, "data-chart-image": chart }), h("figcaption", {}, chart)))));
}

// -- alerts -----------------------------------------------------------------------------------
// Firing alerts show on every page (a banner and a count in the menu), refreshed on their own timer.
const ALERT_POLL_MS = 5000;
async function refreshAlertBanner() {
  let firing = [];
  try { ({ alerts: firing } = await api("GET", "/v1/alerts?state=firing&limit=50")); } catch (_) { return; }
  const banner = document.getElementById("alert-banner");
  const count = document.getElementById("alert-count");
  count.textContent = firing.length; count.hidden = !firing.length;
  banner.hidden = !firing.length;
  banner.replaceChildren(...firing.slice(0, 3).map((a) => h("div", { class: `alert-line severity-${a.severity}`, "data-alert-rule": a.rule },
    h("strong", {}, `${a.severity}: ${a.rule}`), ` — ${a.message} `, h("a", { href: "#alerts" }, "details"))),
    firing.length > 3 ? h("div", {}, `and ${firing.length - 3} more`) : "");
}

async function alertsPage() {
  const root = page();
  const [{ alerts }, { rules }] = await Promise.all([api("GET", "/v1/alerts?limit=200"), api("GET", "/v1/alerts/rules")]);
  root.replaceChildren(h("h2", {}, "Alerts"),
    h("section", { class: "card" }, h("table", { id: "alert-table" },
      h("thead", {}, h("tr", {}, ["State", "Severity", "Rule", "Message", "Started", "Resolved"].map((t) => h("th", {}, t)))),
      h("tbody", {}, alerts.map((a) => h("tr", { "data-alert": a.id, "data-state": a.state, class: `severity-${a.severity}` },
        h("td", {}, a.state), h("td", {}, a.severity), h("td", {}, a.rule), h("td", {}, a.message),
        h("td", {}, fmtTime(a.started_at)), h("td", {}, fmtTime(a.resolved_at))))))),
    alerts.length ? "" : h("p", { class: "muted" }, "No alerts so far."),
    h("h3", {}, "Rules"),
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Rule", "Kind", "Signal", "Condition", "Severity"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rules.map((r) => h("tr", {}, h("td", {}, r.name), h("td", {}, r.kind), h("td", {}, r.signal),
        h("td", {}, r.kind === "anomaly" ? `${r.sensitivity} MADs over ${r.window} values` :
          `${r.op} ${r.threshold}${r.kind === "trend" ? ` within ${r.horizon_s} s` : ""}`), h("td", {}, r.severity)))))));
  poll(() => alertsPage().catch(showError));
}

// -- routing ----------------------------------------------------------------------------------
function poll(fn) { stopPolling(); pollTimer = setInterval(fn, POLL_MS); }
function stopPolling() { if (pollTimer) clearInterval(pollTimer); pollTimer = null; }

async function route() {
  stopPolling();
  const [name, ...rest] = (location.hash.replace(/^#/, "") || "training").split("/");
  for (const link of document.querySelectorAll("nav a[data-page]")) link.classList.toggle("active", link.dataset.page === (name === "task" ? "training" : name));
  const arg = rest.map(decodeURIComponent).join("/");
  try {
    if (name === "task") await taskPage(arg);
    else if (name === "inference") await inferencePage();
    else if (name === "models") await modelsPage(arg);
    else if (name === "datasets") await datasetsPage(arg);
    else if (name === "alerts") await alertsPage();
    else await trainingPage();
  } catch (err) { showError(err); }
}

document.getElementById("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", () => { clearError(); route(); });
route();
refreshAlertBanner();
setInterval(refreshAlertBanner, ALERT_POLL_MS);
