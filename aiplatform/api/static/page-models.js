// The Models page: versions (and who registered each), aliases, lineage and compression.

import { api, authedDownload } from "./api.js";
import { act, fmtNum, fmtTime, h, notify, page } from "./dom.js";
import { aliasHistoryTable, lineageGraph } from "./lineage.js";
import { loopsPanel } from "./loops.js";
import { modelKinds } from "./kinds.js";
import { evaluationView } from "./samples.js";

export async function modelsPage(selected) {
  const root = page();
  const { models } = await api("GET", "/v1/models");
  const detail = h("div", { id: "model-detail" });
  root.replaceChildren(h("h2", {}, "Models"),
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Model", "Versions", "Latest", "Aliases"].map((t) => h("th", {}, t)))),
      h("tbody", {}, models.map((m) => h("tr", {},
        h("td", {}, h("a", { href: `#models/${m.name}` }, m.name)), h("td", {}, m.versions), h("td", {}, m.latest_version),
        h("td", {}, Object.entries(m.aliases).map(([a, v]) => `${a} → v${v}`).join(", "))))))),
    await importForm(), detail);
  if (!models.length) detail.append(h("p", { class: "muted" }, "No models yet: a training task registers one, or import one above."));
  if (selected) await modelDetail(detail, selected);
}

// Import a model trained elsewhere: an ONNX file becomes a checked, packaged registry version.
export async function importForm() {
  const importable = (await modelKinds().catch(() => [])).filter((k) => k.importable);
  const field = (label, input) => h("label", {}, label, " ", input);
  const file = h("input", { type: "file", id: "import-file", accept: ".onnx", required: true });
  const name = h("input", { id: "import-name", placeholder: "my-model", required: true, pattern: "[a-z0-9][a-z0-9._-]*" });
  const labels = h("input", { id: "import-labels", placeholder: "cat,dog,owl", required: true });
  const kind = h("select", { id: "import-kind" }, importable.map((k) => h("option", { value: k.name }, k.name)));
  const scores = h("select", { id: "import-scores" }, ["logits", "probabilities"].map((s) => h("option", { value: s }, s)));
  const preprocessing = h("input", { id: "import-preprocessing", size: 40 });
  const hint = () => { preprocessing.placeholder = (importable.find((k) => k.name === kind.value) || {}).import_hint || ""; };
  kind.addEventListener("change", hint);
  hint();
  const evaluateOn = h("input", { id: "import-evaluate-on", placeholder: "mnist@1a2b3c… (optional)", size: 24 });
  const form = h("form", { id: "import-form", onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const body = new FormData();
      body.append("file", file.files[0]);
      for (const [key, input] of [["kind", kind], ["labels", labels], ["scores", scores], ["preprocessing", preprocessing], ["evaluate_on", evaluateOn]]) {
        if (input.value.trim()) body.append(key, input.value.trim());
      }
      const v = await api("POST", `/v1/models/${encodeURIComponent(name.value.trim())}/import`, body, true);
      notify(`Imported ${file.files[0].name} as ${v.name} v${v.version}`);
      const target = `#models/${v.name}`;
      if (location.hash === target) await modelsPage(v.name); else location.hash = target;  // the router renders it
    });
  } }, field("ONNX file", file), field("Name", name), field("Kind", kind), field("Labels", labels),
    field("Output", scores), field("Preprocessing", preprocessing), field("Evaluate on (a dataset version's test split)", evaluateOn),
    h("button", { type: "submit", id: "import-submit" }, "Import"));
  return h("section", { class: "card" }, h("h3", {}, "Import a model trained elsewhere (ONNX)"), form);
}

export async function modelDetail(root, name) {
  const model = await api("GET", `/v1/models/${encodeURIComponent(name)}`);
  // a reload keeps what the person already chose in each version's compression menu
  const chosen = Object.fromEntries([...root.querySelectorAll("select[data-compress-method]")]
    .map((s) => [s.dataset.compressMethod, s.value]));
  const reload = () => modelDetail(root, name);
  const aliasNames = [...new Set(["production", ...Object.keys(model.aliases)])];
  const histories = await Promise.all(aliasNames.map((alias) =>
    api("GET", `/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}/history`)));
  const { runs: loopRuns } = await api("GET", `/v1/loops/${encodeURIComponent(name)}/runs?limit=50`).catch(() => ({ runs: [] }));
  const report = h("div", { id: "compression-report" });
  const evaluationBox = h("div", { id: "evaluation-box" });
  const rows = model.versions.map((v) => {
    const lineage = v.lineage || {};
    return h("tr", { "data-version": v.version },
      h("td", {}, `v${v.version}`), h("td", {}, fmtNum(v.metrics.test_accuracy)), h("td", {}, fmtNum(v.metrics.test_macro_f1)),
      h("td", {}, v.aliases.join(", ")), h("td", { class: "version-created" }, fmtTime(v.created_at), " by ", v.created_by || "unknown"),
      h("td", {}, [lineage.method, lineage.task_id ? h("a", { href: `#task/${lineage.task_id}` }, `task ${lineage.task_id}`) : null,
        lineage.imported ? h("span", { class: "imported", title: `sha256 ${lineage.imported.sha256}` },
          `imported ${lineage.imported.filename || "ONNX"} (${lineage.imported.sha256.slice(0, 12)})`) : null,
        lineage.code_digest ? h("span", { class: "code", title: `code archive sha256 ${lineage.code_digest}` },
          `code ${lineage.entry || ""} @ ${lineage.code_digest.slice(0, 12)}`) : null,
        lineage.dataset, lineage.parent ? `parent v${lineage.parent}` : null].filter(Boolean).flatMap((x) => [x, " "])),
      h("td", {},
        h("button", { "data-action": "promote", onclick: (e) => act(e.target, async () => {
          const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/promote`, { version: v.version });
          await reload(); notify(r.message); }) }, "Promote to production"), " ",
        h("button", { "data-action": "alias", onclick: (e) => act(e.target, async () => {
          const alias = prompt("Alias to point at this version (e.g. staging)");
          if (!alias) return;
          const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/promote`, { version: v.version, alias });
          await reload(); notify(r.message); }) }, "Set alias…"), " ",
        authedDownload(`/v1/models/${encodeURIComponent(name)}/versions/${v.version}/package`, `${name}-v${v.version}.zip`, "Download"), " ",
        h("a", { class: "button", "data-action": "batch", href: `#batch/new/${encodeURIComponent(name)}@${v.version}` }, "Score a dataset"), " ",
        v.metrics.test_evaluation ? h("button", { "data-action": "evaluation", onclick: () => {
          evaluationBox.replaceChildren(evaluationView(name, v.version, v.metrics.test_evaluation, lineage.dataset, model.versions));
          evaluationBox.scrollIntoView();
        } }, "Where it errs") : null, " ",
        compressControl(name, v.version, report, reload, chosen[v.version])));
  });
  root.replaceChildren(h("section", { class: "card" },
    h("div", { class: "row" }, h("h3", {}, name),
      h("button", { id: "rollback", onclick: (e) => act(e.target, async () => {
        const r = await api("POST", `/v1/models/${encodeURIComponent(name)}/rollback`); await reload(); notify(r.message); }) }, "Roll back production")),
    h("table", {}, h("thead", {}, h("tr", {}, ["Version", "Test accuracy", "Macro-F1", "Aliases", "Created", "Lineage", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))), evaluationBox, report,
    h("section", { class: "card", id: "lineage" }, h("h3", {}, "Lineage"), lineageGraph(name, model.versions, loopRuns),
      h("h3", {}, "Alias history"), aliasHistoryTable(histories)), loopsPanel(name));
}

// Compress one version: the method, a button, and the report (also when the gate refuses).
export function compressControl(name, version, reportBox, reload, initial = "int8") {
  const method = h("select", { "data-compress-method": version, "aria-label": `compression method for v${version}` },
    ["int8", "fp16", "prune:0.3", "prune:0.5"].map((m) => h("option", { value: m }, m)));
  method.value = initial;
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

export function compressionReport(r) {
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
