// The Training page: templates, tasks and one task's page.

import { api } from "./api.js";
import { lineChart } from "./charts.js";
import { act, cursorPager, fmtNum, fmtTime, h, notify, page, poll, progressBar, showError, stopPolling } from "./dom.js";
import { readNumber, readParams, schemaField } from "./forms.js";
import { streamLog } from "./logstream.js";
import { route } from "./router.js";

const TASKS_PER_PAGE = 50;

export async function trainingPage() {
  const root = page();
  const formCard = h("section", { class: "card", id: "create-card", hidden: true });
  const list = h("tbody", { id: "task-rows" });
  const counts = h("span", { class: "muted", id: "task-counts" });
  const pager = cursorPager("tasks", async (before) => {
    const data = await api("GET", `/v1/tasks?limit=${TASKS_PER_PAGE}${before ? `&before=${encodeURIComponent(before)}` : ""}`);
    counts.textContent = `waiting ${data.counts.waiting} · running ${data.counts.running} · finished ${data.counts.finished}`;
    list.replaceChildren(...data.tasks.map(taskRow));
    if (!data.tasks.length) list.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No tasks yet: create one.")));
    return data.next_before;
  });
  root.replaceChildren(
    h("div", { class: "row" }, h("h2", {}, "Training tasks"),
      h("button", { class: "primary", id: "new-task", onclick: () => openCreateForm(formCard) }, "Create new task"), counts),
    formCard,
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Task", "Template", "Model", "State", "Progress", "Val. accuracy", "Created", ""].map((t) => h("th", {}, t)))),
      list), pager.element),
  );
  const refresh = async () => {
    try { await pager.refresh(); } catch (err) { showError(err); }
  };
  await refresh();
  poll(refresh);
}

export function taskProgress(task) {
  const p = task.progress || {};
  if (!p.epochs) return task.state === "RUNNING" ? "starting…" : "";
  return progressBar(p.epoch / p.epochs, `epoch ${p.epoch}/${p.epochs}`);
}

export function taskActions(task, after) {
  const buttons = [];
  if (task.state === "CREATED") buttons.push(h("button", { class: "primary", "data-action": "start", onclick: (e) => act(e.target, async () => { await api("POST", `/v1/tasks/${task.id}/start`); notify(`Task ${task.id} queued`); after(); }) }, "Start training"));
  if (["CREATED", "QUEUED", "RUNNING"].includes(task.state)) buttons.push(h("button", { "data-action": "cancel", onclick: (e) => act(e.target, async () => { await api("POST", `/v1/tasks/${task.id}/cancel`); notify(`Task ${task.id} cancelled`); after(); }) }, "Cancel"));
  // The same template, parameters, model name and (for your own code) code archive, queued anew.
  if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(task.state)) buttons.push(h("button", { "data-action": "rerun", onclick: (e) => act(e.target, async () => { const again = await api("POST", `/v1/tasks/${task.id}/rerun`); notify(`Task ${again.id} queued: ${task.id} run again`); location.hash = `#task/${again.id}`; }) }, "Run again"));
  return buttons;
}

export function taskRow(task) {
  const metrics = (task.progress && task.progress.metrics) || {};
  return h("tr", { "data-task": task.id },
    h("td", {}, h("a", { href: `#task/${task.id}` }, task.id)),
    h("td", {}, task.template),
    h("td", {}, task.result ? h("a", { href: `#models/${task.result.model}` }, `${task.result.model} v${task.result.version}`) : (task.model_name || "")),
    h("td", {}, h("span", { class: `state state-${task.state}`, "data-state": task.state }, task.cancel_requested && task.state === "RUNNING" ? "CANCELLING" : task.state)),
    h("td", {}, taskProgress(task)),
    h("td", {}, fmtNum(metrics.val_accuracy)),
    h("td", { class: "task-created" }, fmtTime(task.created_at), h("div", { class: "muted" }, `by ${task.created_by || "unknown"}`)),
    h("td", {}, taskActions(task, () => route())));
}

export async function openCreateForm(card) {
  await act(null, async () => {
    const { templates } = await api("GET", "/v1/templates");
    const select = h("select", { id: "template-select" }, h("option", { value: "" }, "— pick a template —"),
      templates.filter((t) => t.name !== "sweep").map((t) => h("option", { value: t.name }, `${t.title} (${t.name})`)));
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
        "code" in (template.schema.properties || {}) ? codeUpload() : null,
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

// Your own code as a task: a .zip of the project uploaded to /v1/code, its digest put in the
// `code` parameter (what the task runs, and what "Run again" runs again).
function codeUpload() {
  const file = h("input", { type: "file", id: "code-file", accept: ".zip,application/zip" });
  const status = h("small", { id: "code-status" }, "a .zip of your project (its package and train function)");
  file.addEventListener("change", () => act(file, async () => {
    if (!file.files.length) return;
    status.textContent = "uploading…";
    try {
      const archive = await api("POST", "/v1/code", new Blob([file.files[0]], { type: "application/zip" }), true);
      document.getElementById("param-code").value = archive.digest;
      status.textContent = `kept as ${archive.digest.slice(0, 12)}… (${archive.files} files)`;
    } catch (err) {
      status.textContent = "";
      throw err;
    }
  }));
  return h("label", { for: "code-file" }, h("span", { class: "name" }, "Code archive"), file, status);
}

function paramsTable(params) {
  const entries = Object.entries(params || {});
  if (!entries.length) return "–";
  return h("table", { class: "params", id: "task-params" }, h("tbody", {}, entries.map(([key, value]) =>
    h("tr", { "data-param": key }, h("th", { scope: "row" }, key),
      h("td", {}, typeof value === "object" && value !== null ? h("code", {}, JSON.stringify(value)) : String(value))))));
}

// The dashboard's link only while Ray has the job: once it is gone (deleted, or lost with the head)
// the page's log, curves and record are the copies the platform kept in storage.
function rayJob(task) {
  if (!task.ray_job_id) return "–";
  if (task.ray_job_known === false) {
    return h("span", {}, task.ray_job_id, " ",
      h("small", { class: "muted", id: "ray-job-gone" }, "no longer in Ray (history kept in storage)"));
  }
  return task.ray_dashboard_url
    ? h("a", { href: task.ray_dashboard_url, id: "ray-job-link", target: "_blank", rel: "noopener" }, task.ray_job_id)
    : task.ray_job_id;
}

function waitingText(task) {
  if (task.state === "QUEUED" || task.state === "CREATED") return `(no logs yet: the task is ${task.state.toLowerCase()}${task.waiting ? `; ${task.waiting}` : ""})`;
  if (!task.ray_job_id) return "(no logs here: this run was not started as a Ray job; its output went to the terminal that started it)";
  if (task.source !== "api") return "(no logs: this run was submitted to Ray directly and Ray no longer keeps its job's log)";
  return "(no logs yet)";
}

export async function taskPage(taskId) {
  const root = page();
  const info = h("div", { id: "task-info" });
  const charts = h("div", { class: "charts", id: "task-charts" });
  const logs = h("pre", { class: "logs", id: "task-logs", tabindex: "0" }, "");
  // The log streams while the task runs; where a stream cannot be had, the page polls its tail.
  let streaming = false;
  const startStream = () => {
    streaming = true;
    const stream = streamLog(taskId, logs);
    window.addEventListener("hashchange", stream.stop, { once: true });
    stream.done.catch(() => { streaming = false; });
  };
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
          [["Template", task.template], ["Parameters", paramsTable(task.params)],
           ...(task.result && task.result.code_digest ? [["Code", h("code", { id: "task-code", title: task.result.code_digest }, `${task.result.entry} @ ${task.result.code_digest.slice(0, 12)}…`)]] : []),
           ["Priority", task.priority], ["Ray job", rayJob(task)], ["Attempts", task.attempts],
           ...(task.waiting ? [["Waiting", h("span", { id: "task-waiting" }, task.waiting)]] : []),
           ["Created", fmtTime(task.created_at)], ["Started", fmtTime(task.started_at)], ["Finished", fmtTime(task.finished_at)],
           ["Result", task.result ? h("span", {}, h("a", { href: `#models/${task.result.model}` }, `${task.result.model} v${task.result.version}`),
             `  test accuracy ${fmtNum(task.result.test_accuracy)}`) : "–"],
           ["Error", task.error ? `${task.error_reason || ""}: ${task.error}` : "–"]].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))));
      const series = (key) => history.filter((m) => typeof m[key] === "number").map((m) => [m.epoch, m[key]]);
      charts.replaceChildren(
        lineChart("loss", [{ name: "train loss", points: series("train_loss") }, { name: "val loss", points: series("val_loss") }]),
        lineChart("accuracy", [{ name: "val accuracy", points: series("val_accuracy") }]));
      if (!streaming && task.state === "RUNNING") startStream();
      if (!streaming) {
        // Ray colours its log prefixes for terminals; a page shows them plain.
        try { logs.textContent = (await api("GET", `/v1/tasks/${taskId}/logs?tail=400`)).logs.replace(/\x1b\[[0-9;]*m/g, ""); }
        catch (err) { logs.textContent = err.status === 404 ? waitingText(task) : err.message; }
      }
      if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(task.state)) stopPolling();
    } catch (err) { showError(err); stopPolling(); }
  };
  await refresh();
  poll(refresh);
}
