// The Sweeps page: sweeps and a form for a new one; a sweep's page (its trials, live); and the
// comparison of any runs (compare.js).

import { api } from "./api.js";
import { comparisonView } from "./compare.js";
import { act, fmtNum, fmtTime, h, notify, page, poll, progressBar, showError, stopPolling } from "./dom.js";
import { readNumber } from "./forms.js";

const DONE = ["FINISHED", "STOPPED", "FAILED"];
const ENDED = ["SUCCEEDED", "FAILED", "CANCELLED"];
const DIMENSION_TYPES = ["loguniform", "uniform", "int", "choice"];

export async function sweepsPage() {
  const root = page();
  const rows = h("tbody", { id: "sweep-rows" });
  const formCard = h("section", { class: "card", id: "sweep-form-card", hidden: true });
  root.replaceChildren(
    h("div", { class: "row" }, h("h2", {}, "Sweeps"),
      h("button", { class: "primary", id: "new-sweep", onclick: () => openSweepForm(formCard) }, "New sweep")),
    h("p", { class: "muted" }, "A sweep trains many trials of a template (or your own code) with values drawn from a search space, on Ray Tune; ASHA stops the weak ones early. Stop and resume it at any time; the best trial becomes a model version."),
    formCard,
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Sweep", "Template", "State", "Trials", "Best", "Model", "Created"].map((t) => h("th", { scope: "col" }, t)))), rows)));
  const refresh = async () => {
    try {
      const { sweeps } = await api("GET", "/v1/sweeps?limit=100");
      rows.replaceChildren(...sweeps.map(sweepRow));
      if (!sweeps.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No sweeps yet: start one with “New sweep”.")));
    } catch (err) { showError(err); }
  };
  await refresh();
  poll(refresh);
}

function sweepRow(sweep) {
  const p = sweep.progress || {}, params = sweep.params;
  const best = (p.metrics || {})[`best_${params.metric}`];
  return h("tr", { "data-sweep": sweep.id },
    h("td", {}, h("a", { href: `#sweep/${sweep.id}` }, sweep.id)),
    h("td", {}, params.template),
    h("td", {}, h("span", { class: `state state-${sweep.state}` }, sweep.state)),
    h("td", {}, progressBar((p.epoch || 0) / params.trials, `${p.epoch || 0}/${params.trials}`)),
    h("td", {}, typeof best === "number" ? `${params.metric} ${fmtNum(best)}` : ""),
    h("td", {}, sweep.result ? h("a", { href: `#models/${sweep.result.model}` }, `${sweep.result.model} v${sweep.result.version}`) : (sweep.model_name || "")),
    h("td", {}, fmtTime(sweep.created_at)));
}

function dimensionRow() {
  const type = h("select", { class: "dim-type", "aria-label": "type" }, DIMENSION_TYPES.map((t) => h("option", { value: t }, t)));
  const low = h("input", { type: "text", class: "dim-low", placeholder: "low", "aria-label": "low" });
  const high = h("input", { type: "text", class: "dim-high", placeholder: "high", "aria-label": "high" });
  const values = h("input", { type: "text", class: "dim-values", placeholder: "values, comma-separated (JSON each)", "aria-label": "values", hidden: true });
  type.addEventListener("change", () => { const choice = type.value === "choice"; low.hidden = high.hidden = choice; values.hidden = !choice; });
  const row = h("div", { class: "row dimension" },
    h("input", { type: "text", class: "dim-name", placeholder: "parameter, e.g. learning_rate", "aria-label": "parameter" }), type, low, high, values,
    h("button", { type: "button", "aria-label": "remove this parameter", onclick: () => row.remove() }, "×"));
  return row;
}

function readDimension(row) {
  const name = row.querySelector(".dim-name").value.trim();
  const type = row.querySelector(".dim-type").value;
  if (type === "choice") {
    const raw = row.querySelector(".dim-values").value;
    const values = raw.split(/,(?![^[]*\])/).map((v) => v.trim()).filter(Boolean).map((v) => { try { return JSON.parse(v); } catch { return v; } });
    return [name, { type, values }];
  }
  return [name, { type, low: readNumber(row.querySelector(".dim-low").value), high: readNumber(row.querySelector(".dim-high").value) }];
}

async function openSweepForm(card) {
  await act(null, async () => {
    const { templates } = await api("GET", "/v1/templates");
    const field = (label, input, hint) => h("label", {}, h("span", { class: "name" }, label), input, hint ? h("small", {}, hint) : "");
    const dims = h("div", { id: "dimensions" }, dimensionRow());
    const form = h("form", { id: "sweep-form" },
      field("Template", h("select", { id: "sweep-template" }, templates.filter((t) => t.name !== "sweep").map((t) => h("option", { value: t.name }, `${t.title} (${t.name})`)))),
      field("Fixed parameters", h("textarea", { id: "sweep-fixed", rows: 3 }, '{"epochs": 3}'), "JSON: what every trial shares"),
      h("fieldset", {}, h("legend", {}, "Search space"), dims,
        h("button", { type: "button", id: "add-dimension", onclick: () => dims.append(dimensionRow()) }, "Add a parameter")),
      field("Metric", h("input", { type: "text", id: "sweep-metric", value: "val_accuracy" })),
      field("Mode", h("select", { id: "sweep-mode" }, h("option", { value: "max" }, "max"), h("option", { value: "min" }, "min"))),
      field("Trials", h("input", { type: "text", id: "sweep-trials", value: "8" })),
      field("At once", h("input", { type: "text", id: "sweep-concurrent", value: "2" }), "trials running at the same time"),
      field("Early stopping", h("select", { id: "sweep-scheduler" }, h("option", { value: "asha" }, "ASHA"), h("option", { value: "none" }, "none"))),
      field("Grace period", h("input", { type: "text", id: "sweep-grace", value: "1" }), "epochs before ASHA may stop a trial"),
      field("Search", h("select", { id: "sweep-search" }, h("option", { value: "random" }, "random"), h("option", { value: "tpe" }, "TPE (Optuna)"))),
      field("Model name", h("input", { type: "text", id: "sweep-model-name", placeholder: "default from the template" })),
      h("button", { class: "primary", type: "submit", id: "start-sweep" }, "Start sweep"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(event.submitter, async () => {
        let fixed;
        try { fixed = JSON.parse(form.querySelector("#sweep-fixed").value || "{}"); } catch (err) { throw new Error(`Fixed parameters are not valid JSON: ${err.message}`); }
        const body = {
          template: form.querySelector("#sweep-template").value, params: fixed,
          space: Object.fromEntries([...dims.querySelectorAll(".dimension")].map(readDimension).filter(([name]) => name)),
          metric: form.querySelector("#sweep-metric").value.trim(), mode: form.querySelector("#sweep-mode").value,
          trials: readNumber(form.querySelector("#sweep-trials").value), max_concurrent_trials: readNumber(form.querySelector("#sweep-concurrent").value),
          scheduler: { type: form.querySelector("#sweep-scheduler").value, grace_period: readNumber(form.querySelector("#sweep-grace").value) },
          search: form.querySelector("#sweep-search").value,
        };
        const name = form.querySelector("#sweep-model-name").value.trim();
        if (name) body.model_name = name;
        const sweep = await api("POST", "/v1/sweeps", body);
        notify(`Sweep ${sweep.id} queued`);
        location.hash = `#sweep/${sweep.id}`;
      });
    });
    card.replaceChildren(h("h3", {}, "New sweep"), form);
    card.hidden = false;
  });
}

export async function sweepPage(sweepId) {
  const root = page();
  const head = h("div", { id: "sweep-head" });
  const actions = h("div", { class: "row", id: "sweep-actions" });
  const rows = h("tbody", { id: "trial-rows" });
  const compare = h("button", { id: "compare-selected", onclick: () => {
    const ids = [...rows.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
    location.hash = `#compare/${ids.length ? ids.join(",") : sweepId}`;
  } }, "Compare selected (or all)");
  root.replaceChildren(h("p", {}, h("a", { href: "#sweeps" }, "← all sweeps")), head, actions,
    h("section", { class: "card" }, h("div", { class: "row" }, h("h3", {}, "Trials"), compare),
      h("table", { id: "trials" }, h("thead", {}, h("tr", {}, ["", "Trial", "State", "Epoch", "Metric", "Values", "Why it ended"].map((t) => h("th", { scope: "col" }, t)))), rows)));
  const refresh = async () => {
    try {
      const sweep = await api("GET", `/v1/sweeps/${sweepId}`);
      const params = sweep.params, counts = sweep.trial_counts;
      const done = DONE.reduce((n, st) => n + (counts[st] || 0), 0);
      const best = sweep.best_trial;
      head.replaceChildren(
        h("h2", {}, `Sweep ${sweep.id} `, h("span", { class: `state state-${sweep.state}`, id: "sweep-state" }, sweep.state)),
        h("p", {}, `${params.template}: ${params.metric} (${params.mode}), ${params.search} search, ${params.scheduler.type === "asha" ? `ASHA from epoch ${params.scheduler.grace_period}` : "no early stopping"}, ${params.max_concurrent_trials} at once`),
        progressBar(done / params.trials, `${done}/${params.trials} trials done · ${counts.RUNNING || 0} running · ${counts.STOPPED || 0} stopped early · ${counts.FAILED || 0} failed · ${counts.PAUSED || 0} paused`),
        h("p", { id: "best-trial" }, best ? `Best so far: trial ${best.trial_id}, ${params.metric} ${fmtNum(best.metrics[params.metric])} with ${JSON.stringify(best.params)}` : "No trial has finished yet."),
        sweep.result ? h("p", {}, "Registered: ", h("a", { href: `#models/${sweep.result.model}` }, `${sweep.result.model} version ${sweep.result.version}`)) : "",
        sweep.error ? h("p", { class: "error-text" }, sweep.error) : "",
        sweep.waiting ? h("p", { class: "muted" }, `Waiting: ${sweep.waiting}`) : "");
      actions.replaceChildren(...sweepActions(sweep, refresh), h("a", { href: `#task/${sweep.id}` }, "its job's log and curve"));
      const checked = new Set([...rows.querySelectorAll("input:checked")].map((c) => c.value));
      rows.replaceChildren(...sweep.trials.map((t) => h("tr", { "data-trial": t.trial_id, "data-state": t.state },
        h("td", {}, h("input", { type: "checkbox", value: t.run_id, checked: checked.has(t.run_id), "aria-label": `select trial ${t.trial_id}` })),
        h("td", {}, t.trial_id),
        h("td", {}, h("span", { class: `state state-${t.state}` }, t.state)),
        h("td", {}, t.epoch ?? ""),
        h("td", {}, fmtNum(t.metrics[params.metric])),
        h("td", {}, Object.entries(t.params).map(([k, v]) => `${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(3) : JSON.stringify(v)}`).join(" ")),
        h("td", { class: "muted" }, t.error || ""))));
      if (!sweep.trials.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, sweep.state === "QUEUED" ? "Queued: no trial has started." : "No trial has started yet.")));
      if (ENDED.includes(sweep.state)) stopPolling();
    } catch (err) { showError(err); stopPolling(); }
  };
  await refresh();
  poll(refresh);
}

function sweepActions(sweep, after) {
  const post = (path, body, message) => (e) => act(e.target, async () => { await api("POST", `/v1/sweeps/${sweep.id}/${path}`, body); notify(message); poll(after); await after(); });
  const buttons = [];
  if (["QUEUED", "RUNNING", "CREATED"].includes(sweep.state)) buttons.push(h("button", { id: "stop-sweep", onclick: post("stop", undefined, `Sweep ${sweep.id} stopping: its state is saved`) }, "Stop"));
  if (["FAILED", "CANCELLED"].includes(sweep.state)) buttons.push(h("button", { class: "primary", id: "resume-sweep", onclick: post("resume", undefined, `Sweep ${sweep.id} resumed`) }, "Resume"));
  if (ENDED.includes(sweep.state)) {
    const more = h("input", { type: "text", id: "extend-trials", value: "4", size: 3, "aria-label": "trials to add" });
    buttons.push(h("span", {}, h("button", { id: "extend-sweep", onclick: (e) => post("extend", { trials: readNumber(more.value) }, `Sweep ${sweep.id} extended`)(e) }, "Add trials"), " ", more));
  }
  return buttons;
}

export async function comparePage(arg) {
  const root = page();
  root.replaceChildren(h("p", {}, h("a", { href: "#sweeps" }, "← sweeps")), h("p", { class: "muted" }, "Loading the runs…"));
  let ids = arg.split(",").map((x) => x.trim()).filter(Boolean);
  if (ids.length === 1 && !ids[0].includes(":")) {  // a sweep: all its trials
    try {
      const sweep = await api("GET", `/v1/sweeps/${ids[0]}`);
      ids = sweep.trials.map((t) => t.run_id);
    } catch (err) { if (err.status !== 404) throw err; }  // a task: itself
  }
  if (!ids.length) { root.replaceChildren(h("p", {}, "Nothing to compare yet.")); return; }
  root.replaceChildren(h("p", {}, h("a", { href: "#sweeps" }, "← sweeps")), await comparisonView(ids));
}
