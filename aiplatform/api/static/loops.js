// The retraining loop of a model, on its page: its policy (or a form to create one), a run by
// hand, the runs with each step's time, outcome and links, their lineage, and skipped triggers.

import { api } from "./api.js";
import { act, fmtNum, fmtTime, h, notify } from "./dom.js";

const path = (name, ...rest) => ["/v1/loops", encodeURIComponent(name), ...rest].join("/");

// A section filled once its requests answer; a model without a policy gets the form.
export function loopsPanel(name) {
  const section = h("section", { class: "card", id: "loops" }, h("h3", {}, "Retraining loop"), h("p", {}, "Loading…"));
  const reload = () => fill(section, name, reload).catch((err) => {
    section.replaceChildren(h("h3", {}, "Retraining loop"), h("p", { class: "muted" }, `Not available: ${err.message}`));
  });
  reload();
  return section;
}

async function fill(section, name, reload) {
  let policy = null;
  try { policy = await api("GET", path(name)); }
  catch (err) { if (err.status !== 404) throw err; }
  if (!policy) { section.replaceChildren(h("h3", {}, "Retraining loop"), policyForm(name, reload)); return; }
  const [{ runs }, { skipped }] = await Promise.all([
    api("GET", `${path(name, "runs")}?limit=10`), api("GET", `${path(name, "skipped")}?limit=10`)]);
  const triggers = [policy.schedule ? `schedule ${policy.schedule} (UTC)` : null,
    policy.on_alerts.length ? `alerts ${policy.on_alerts.join(", ")}` : null,
    policy.on_new_data ? "a new dataset version" : null, "by hand"].filter(Boolean).join("; ");
  section.replaceChildren(
    h("div", { class: "row" }, h("h3", {}, "Retraining loop"),
      h("button", { "data-action": "loop-trigger", onclick: (e) => act(e.target, async () => {
        const r = await api("POST", path(name, "trigger"), { detail: "from the UI" });
        notify(r.run ? `Started ${r.run.id}` : `Started nothing: ${r.skipped.reason}`); await reload(); }) }, "Retrain now")),
    h("p", {}, `${policy.enabled ? "Enabled" : "Disabled"}. Triggers: ${triggers}. Cool-down ${policy.cooldown_s} s. `,
      `Data: up to ${policy.data.max_labeled} labeled predictions, ${Math.round(policy.data.holdout_fraction * 100)}% held out. `,
      `Gate: +${policy.gate.margin} accuracy on both slices. Canary: ${policy.canary.weight}% for ${policy.canary.watch_s} s.`),
    runs.length ? h("table", { class: "loop-runs" },
      h("thead", {}, h("tr", {}, ["Run", "Started", "Trigger", "State", "Steps", "Lineage"].map((t) => h("th", {}, t)))),
      h("tbody", {}, runs.map(runRow))) : h("p", { class: "muted" }, "No runs yet."),
    skipped.length ? h("details", {}, h("summary", {}, `${skipped.length} skipped trigger(s)`),
      h("ul", {}, skipped.map((s) => h("li", {}, `${fmtTime(s.at)} ${s.trigger.kind}: ${s.reason}`)))) : null);
}

function runRow(run) {
  return h("tr", { "data-run": run.id },
    h("td", {}, run.id), h("td", {}, fmtTime(run.created_at)),
    h("td", {}, run.trigger.alert_id ? `alert ${run.trigger.detail} (${run.trigger.alert_id})` : run.trigger.kind),
    h("td", {}, run.state, run.error ? h("div", { class: "muted" }, run.error) : null),
    h("td", {}, h("ol", {}, run.steps.map((step) => h("li", {}, `${fmtTime(step.at)} ${step.step}: ${step.outcome}`, stepLinks(step))))),
    h("td", {}, chain(run)));
}

function stepLinks(step) {
  const parts = [];
  if (step.dataset) parts.push(" ", h("a", { href: `#datasets/${step.dataset.replace("@", "/")}` }, step.dataset), ` (+${step.labeled} labeled)`);
  if (step.task_id) parts.push(" ", h("a", { href: `#task/${step.task_id}` }, `task ${step.task_id}`));
  if (step.step === "train" && step.version) parts.push(` v${step.version}`);
  if (step.original) parts.push(` test split ${fmtNum(step.original.production_accuracy)} → ${fmtNum(step.original.candidate_accuracy)},`,
    ` fresh ${fmtNum(step.fresh.production_accuracy)} → ${fmtNum(step.fresh.candidate_accuracy)} (${step.fresh.rows} rows)`);
  if (step.step === "canary" && step.weight) parts.push(` ${step.weight}% for ${step.watched_s} s`);
  if (step.alert_id) parts.push(` alert ${step.alert_rule} (${step.alert_id})`);
  if (step.reasons) parts.push(` ${step.reasons.join("; ")}`);
  if (step.error) parts.push(` ${step.error}`);
  return parts;
}

// alert -> dataset version -> task -> version -> decision, from the run's own steps.
function chain(run) {
  const steps = Object.fromEntries(run.steps.map((s) => [s.step, s]));
  const links = [run.trigger.alert_id ? `alert ${run.trigger.alert_id}` : run.trigger.kind];
  if (steps.data && steps.data.dataset) links.push(steps.data.dataset);
  if (steps.train && steps.train.task_id) links.push(`task ${steps.train.task_id}`);
  if (steps.train && steps.train.version) links.push(`v${steps.train.version}`);
  if (run.finished_at) links.push(run.state);
  return links.join(" → ");
}

function policyForm(name, reload) {
  const field = (label, input) => h("label", {}, label, " ", input);
  const alerts = h("input", { name: "on_alerts", value: "quality-low", size: 24 });
  const schedule = h("input", { name: "schedule", placeholder: "0 3 * * *", size: 12 });
  const margin = h("input", { name: "margin", type: "number", step: "0.001", min: "0", max: "1", value: "0.0" });
  const weight = h("input", { name: "weight", type: "number", step: "1", min: "1", max: "99", value: "10" });
  const watch = h("input", { name: "watch_s", type: "number", step: "1", min: "0", value: "300" });
  const form = h("form", { class: "stack", onsubmit: (e) => { e.preventDefault(); act(e.submitter, async () => {
    const body = {
      model: name,
      on_alerts: alerts.value.split(",").map((x) => x.trim()).filter(Boolean),
      schedule: schedule.value.trim() || null,
      gate: { margin: Number(margin.value) },
      canary: { weight: Number(weight.value), watch_s: Number(watch.value) },
    };
    await api("POST", "/v1/loops", body); notify(`Retraining loop of ${name} created`); await reload(); }); } },
    h("p", { class: "muted" }, "No retraining loop. Retrain this model when an alert fires or on a schedule, gate the candidate against production, canary it, then promote:"),
    field("Alert rules (comma-separated, or any)", alerts), field("Schedule (cron, UTC)", schedule),
    field("Gate margin", margin), field("Canary %", weight), field("Watch (s)", watch),
    h("button", { type: "submit", "data-action": "loop-create" }, "Create loop"));
  return form;
}
