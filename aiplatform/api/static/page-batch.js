// The Batch page: score a dataset split, an uploaded file or a URI with a model version (a queued
// job of template batch-inference), the jobs with their live progress, and one job's page with its
// evaluation and its Parquet output.

import { api, authedDownload } from "./api.js";
import { act, cursorPager, fmtNum, fmtTime, h, notify, page, poll, progressBar, showError, stopPolling } from "./dom.js";
import { route } from "./router.js";

const JOBS_PER_PAGE = 50;
const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];

// #batch, or #batch/new/NAME@REF: the form opened on that model version (the Models page links here).
export async function batchPage(arg) {
  const root = page();
  const formCard = h("section", { class: "card", id: "batch-create-card", hidden: true });
  const list = h("tbody", { id: "batch-rows" });
  const pager = cursorPager("batch", async (before) => {
    const data = await api("GET", `/v1/batch-jobs?limit=${JOBS_PER_PAGE}${before ? `&before=${encodeURIComponent(before)}` : ""}`);
    list.replaceChildren(...data.jobs.map(jobRow));
    if (!data.jobs.length) list.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No batch jobs yet: score a dataset or a file.")));
    return data.next_before;
  });
  root.replaceChildren(
    h("div", { class: "row" }, h("h2", {}, "Batch inference"),
      h("button", { class: "primary", id: "new-batch", onclick: () => openBatchForm(formCard) }, "New batch job")),
    formCard,
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Job", "Model", "Input", "State", "Rows", "Rows/s", "Created", ""].map((t) => h("th", {}, t)))),
      list), pager.element),
  );
  const [mode, ...rest] = (arg || "").split("/");
  if (mode === "new") await openBatchForm(formCard, rest.join("/"));
  const refresh = async () => {
    try { await pager.refresh(); } catch (err) { showError(err); }
  };
  await refresh();
  poll(refresh);
}

export function inputText(spec) {
  spec = spec || {};
  if (spec.dataset) return `${spec.dataset}${spec.dataset_version ? `@${spec.dataset_version}` : ""} (${spec.split || "test"})`;
  if (spec.upload) return h("span", { title: `upload ${spec.upload}` }, `upload ${spec.upload.slice(0, 12)}…`);
  return spec.uri || "–";
}

// The rows done, in total and per second: the task's progress metrics, reported part by part.
const rowsOf = (job) => ({ ...(job.progress || {}), ...((job.progress || {}).metrics || {}) });

export function rowsProgress(job) {
  const p = rowsOf(job);
  const done = p.rows_done || 0, total = p.rows_total || 0;
  if (!total) return job.state === "RUNNING" ? (done ? `${done.toLocaleString()} rows` : "starting…") : "";
  return progressBar(done / total, `${done.toLocaleString()} / ${total.toLocaleString()}`);
}

const rate = (job) => { const r = rowsOf(job).rows_per_s; return typeof r === "number" && r > 0 ? Math.round(r).toLocaleString() : "–"; };
const stateText = (job) => (job.cancel_requested && job.state === "RUNNING" ? "CANCELLING" : job.state);

function jobActions(job, after) {
  const buttons = [];
  if (!FINISHED.includes(job.state)) buttons.push(h("button", { "data-action": "cancel", onclick: (e) => act(e.target, async () => {
    await api("POST", `/v1/batch-jobs/${encodeURIComponent(job.id)}/cancel`); notify(`Batch job ${job.id} cancelled`); after(); }) }, "Cancel"));
  if (job.state === "SUCCEEDED") buttons.push(outputLink(job));
  return buttons;
}

const outputLink = (job) => authedDownload(`/v1/batch-jobs/${encodeURIComponent(job.id)}/output`, `batch-${job.id}.parquet`, "Download Parquet");

function jobRow(job) {
  return h("tr", { "data-batch-job": job.id },
    h("td", {}, h("a", { href: `#batch-job/${job.id}` }, job.id)),
    h("td", {}, job.params.model),
    h("td", {}, inputText(job.params.input)),
    h("td", {}, h("span", { class: `state state-${job.state}`, "data-state": job.state }, stateText(job))),
    h("td", {}, rowsProgress(job)),
    h("td", {}, rate(job)),
    h("td", {}, fmtTime(job.created_at)),
    h("td", {}, jobActions(job, () => route())));
}

// The form: a model and one of its versions or aliases, then a dataset split, a file or a URI.
export async function openBatchForm(card, preset) {
  await act(null, async () => {
    const { models } = await api("GET", "/v1/models");
    const { datasets } = await api("GET", "/v1/datasets");
    const [presetName, presetRef] = (preset || "").split("@");
    const model = h("select", { id: "batch-model" }, h("option", { value: "" }, "— pick a model —"),
      models.map((m) => h("option", { value: m.name, selected: m.name === presetName }, m.name)));
    const version = h("select", { id: "batch-version" });
    const loadVersions = async () => {
      version.replaceChildren();
      if (!model.value) return;
      const detail = await api("GET", `/v1/models/${encodeURIComponent(model.value)}`);
      version.append(
        ...Object.entries(detail.aliases).map(([alias, v]) => h("option", { value: alias }, `${alias} (v${v})`)),
        ...detail.versions.map((v) => h("option", { value: String(v.version) }, `v${v.version}`)));
      if (presetRef && model.value === presetName) version.value = presetRef;
    };
    model.addEventListener("change", () => act(null, loadVersions));
    await loadVersions();

    const source = h("select", { id: "batch-source" },
      h("option", { value: "dataset" }, "a dataset version's split"), h("option", { value: "file" }, "a file (CSV, ZIP of images, JSON lines)"),
      h("option", { value: "uri" }, "an s3:// prefix or https URL"));
    const dataset = h("select", { id: "batch-dataset" }, datasets.map((d) => h("option", { value: d.ref }, d.ref)));
    const split = h("select", { id: "batch-split" }, ["test", "val", "train"].map((s) => h("option", { value: s }, s)));
    const file = h("input", { type: "file", id: "batch-file", accept: ".csv,.zip,.jsonl,.json" });
    const uri = h("input", { type: "text", id: "batch-uri", size: 50, placeholder: "s3://bucket/prefix/ or https://…" });
    const choices = {
      dataset: h("div", { id: "batch-source-dataset" }, h("label", { for: "batch-dataset" }, h("span", { class: "name" }, "Dataset version"), dataset),
        h("label", { for: "batch-split" }, h("span", { class: "name" }, "Split"), split)),
      file: h("div", { id: "batch-source-file", hidden: true }, h("label", { for: "batch-file" }, h("span", { class: "name" }, "File"), file,
        h("small", {}, "a CSV of rows (its header the model's features), a .zip of images, or JSON lines {\"text\": …}"))),
      uri: h("div", { id: "batch-source-uri", hidden: true }, h("label", { for: "batch-uri" }, h("span", { class: "name" }, "URI"), uri)),
    };
    source.addEventListener("change", () => { for (const [key, box] of Object.entries(choices)) box.hidden = key !== source.value; });
    if (!datasets.length) { source.value = "file"; choices.dataset.hidden = true; choices.file.hidden = false; }

    const evaluate = h("input", { type: "checkbox", id: "batch-evaluate", checked: true });
    const writeResults = h("input", { type: "checkbox", id: "batch-write-results" });
    const batchSize = h("input", { type: "text", inputmode: "numeric", id: "batch-size", placeholder: "chosen for the model" });
    const maxRows = h("input", { type: "text", inputmode: "numeric", id: "batch-max-rows", placeholder: "all" });
    const priority = h("input", { type: "text", inputmode: "numeric", id: "batch-priority", value: "0" });
    const form = h("form", { id: "batch-form" },
      h("label", { for: "batch-model" }, h("span", { class: "name" }, "Model"), model),
      h("label", { for: "batch-version" }, h("span", { class: "name" }, "Version or alias"), version),
      h("label", { for: "batch-source" }, h("span", { class: "name" }, "Score"), source),
      choices.dataset, choices.file, choices.uri,
      h("label", { for: "batch-evaluate" }, h("span", { class: "name" }, "Evaluate"), evaluate, h("small", {}, "accuracy, macro-F1 and the confusion matrix where the input has labels")),
      h("label", { for: "batch-write-results" }, h("span", { class: "name" }, "Write to the result store"), writeResults, h("small", {}, "off: the Parquet output only (a million rows would swamp the store)")),
      h("label", { for: "batch-size" }, h("span", { class: "name" }, "Batch size"), batchSize),
      h("label", { for: "batch-max-rows" }, h("span", { class: "name" }, "At most rows"), maxRows),
      h("label", { for: "batch-priority" }, h("span", { class: "name" }, "Priority"), priority, h("small", {}, "-100 … 100, higher starts first")),
      h("div", { class: "row" },
        h("button", { class: "primary", type: "submit", id: "batch-submit" }, "Start batch job"),
        h("button", { type: "button", onclick: () => { card.hidden = true; } }, "Close")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(event.submitter, async () => {
        if (!model.value) throw new Error("Pick a model");
        let input;
        if (source.value === "dataset") {
          if (!dataset.value) throw new Error("No dataset version to score: upload a file instead");
          const [name, datasetVersion] = dataset.value.split("@");
          input = { dataset: name, dataset_version: datasetVersion, split: split.value };
        } else if (source.value === "file") {
          if (!file.files.length) throw new Error("Choose a file to score");
          const body = new FormData();
          body.append("file", file.files[0]);
          const stored = await api("POST", "/v1/batch-inputs", body, true);
          input = { upload: stored.id };
        } else input = { uri: uri.value.trim() };
        const body = { model: `${model.value}@${version.value}`, input, evaluate: evaluate.checked, write_results: writeResults.checked };
        const numbers = { batch_size: batchSize.value, max_rows: maxRows.value, priority: priority.value };
        for (const [key, raw] of Object.entries(numbers)) if (raw.trim() !== "") body[key] = Number(raw);
        const job = await api("POST", "/v1/batch-jobs", body);
        notify(`Batch job ${job.id} ${job.state.toLowerCase()}`);
        location.hash = `#batch-job/${job.id}`;
      });
    });
    card.replaceChildren(h("h3", {}, "Score with a model"), form);
    card.hidden = false;
  });
}

// The confusion matrix of a job's evaluation: rows the true label, columns the predicted one.
function confusionTable(evaluation) {
  const { labels, confusion_matrix: matrix } = evaluation;
  return h("table", { class: "confusion", id: "batch-confusion" },
    h("caption", {}, "Confusion matrix: rows are the true label, columns the predicted one"),
    h("thead", {}, h("tr", {}, h("th", {}, ""), labels.map((l) => h("th", { scope: "col", style: "text-align: right" }, l)))),
    h("tbody", {}, matrix.map((row, i) => h("tr", {}, h("th", { scope: "row" }, labels[i]),
      row.map((count, j) => h("td", { class: "cm-cell", "data-count": count, title: `true ${labels[i]}, predicted ${labels[j]}: ${count}`,
        style: i === j && count ? "font-weight: 700" : "" }, count))))));
}

function summaryView(job) {
  const s = job.summary;
  if (!s) return h("p", { class: "muted" }, FINISHED.includes(job.state) ? "No summary: the job wrote none." : "The summary comes when the job has finished.");
  const e = s.evaluation;
  return h("div", { id: "batch-summary" },
    h("table", {}, h("tbody", {},
      [["Rows", (s.rows ?? 0).toLocaleString()], ["Rows per second", typeof s.rows_per_s === "number" ? Math.round(s.rows_per_s).toLocaleString() : "–"],
       ["Model", s.model !== undefined ? `${s.model}${s.version !== undefined ? ` v${s.version}` : ""}` : job.params.model],
       ["Accuracy", h("span", { id: "batch-accuracy" }, e ? fmtNum(e.accuracy) : "– (no labels)")],
       ["Macro-F1", h("span", { id: "batch-macro-f1" }, e ? fmtNum(e.macro_f1) : "–")]].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
    e ? confusionTable(e) : null);
}

export async function batchJobPage(jobId) {
  const root = page();
  const info = h("div", { id: "batch-job-info" });
  const summary = h("div", { id: "batch-job-summary" });
  const logs = h("pre", { class: "logs", id: "batch-job-logs", tabindex: "0" }, "");
  root.replaceChildren(h("p", {}, h("a", { href: "#batch" }, "← all batch jobs")),
    h("h2", {}, `Batch job ${jobId}`), h("section", { class: "card" }, info),
    h("section", { class: "card" }, h("h3", {}, "Summary"), summary),
    h("section", { class: "card" }, h("h3", {}, "Logs"), logs));
  const path = `/v1/batch-jobs/${encodeURIComponent(jobId)}`;
  const refresh = async () => {
    try {
      const job = await api("GET", path);
      info.replaceChildren(
        h("div", { class: "row" }, h("span", { class: `state state-${job.state}`, id: "batch-job-state", "data-state": job.state }, stateText(job)),
          rowsProgress(job), h("span", { class: "muted", id: "batch-rate" }, `${rate(job)} rows/s`), ...jobActions(job, refresh)),
        h("table", {}, h("tbody", {},
          [["Model", job.params.model], ["Input", inputText(job.params.input)],
           ["Evaluate", job.params.evaluate ? "yes" : "no"], ["Result store", job.params.write_results ? "written" : "not written"],
           ["Priority", job.priority], ["Ray job", job.ray_job_id ? (job.ray_dashboard_url ? h("a", { href: job.ray_dashboard_url, target: "_blank", rel: "noopener" }, job.ray_job_id) : job.ray_job_id) : "–"],
           ...(job.waiting ? [["Waiting", job.waiting]] : []),
           ["Created", fmtTime(job.created_at)], ["Started", fmtTime(job.started_at)], ["Finished", fmtTime(job.finished_at)],
           ["Error", job.error ? `${job.error_reason || ""}: ${job.error}` : "–"]].map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))));
      summary.replaceChildren(summaryView(job));
      try { logs.textContent = (await api("GET", `${path}/logs?tail=400`)).logs.replace(/\x1b\[[0-9;]*m/g, ""); }
      catch (err) { logs.textContent = err.status === 404 ? `(no logs yet: the job is ${job.state.toLowerCase()})` : err.message; }
      if (FINISHED.includes(job.state)) stopPolling();
    } catch (err) { showError(err); stopPolling(); }
  };
  await refresh();
  poll(refresh);
}
