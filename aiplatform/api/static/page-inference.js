// The Inference page: predict from an upload or a paste, and past results.

import { api } from "./api.js";
import { act, cursorPager, fmtNum, fmtTime, h, page, poll, progressBar, s, showError } from "./dom.js";

const RESULTS_PER_PAGE = 20;

export async function inferencePage() {
  const root = page();
  const modelSelect = h("select", { id: "model-select" });
  const targetSelect = h("select", { id: "target-select" });
  const fileInput = h("input", { type: "file", id: "file-input", accept: ".png,.jpg,.jpeg,.txt,.md,.csv" });
  const text = h("textarea", { id: "text-input",
    placeholder: "…or paste text here (a table model: JSON {\"features\": {…}} or {\"rows\": […]})" });
  const output = h("div", { id: "prediction" });
  const history = h("tbody", { id: "result-rows" });
  const pagerSlot = h("div");
  root.replaceChildren(h("h2", {}, "Inference"),
    h("section", { class: "card" },
      h("div", { class: "row" }, h("label", {}, "Model ", modelSelect), h("label", {}, "Version ", targetSelect)),
      h("label", {}, "File ", fileInput), text,
      h("div", { class: "row" }, h("button", { class: "primary", id: "predict", onclick: (e) => act(e.target, predict) }, "Predict")),
      output),
    h("section", { class: "card" }, h("h3", {}, "Past results"), h("table", {},
      h("thead", {}, h("tr", {}, ["Result", "Model", "Label", "Probability", "Latency", "Time"].map((t) => h("th", {}, t)))), history),
      pagerSlot));

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
    await resultsPager.reset();  // another model's page: from its newest results
  };
  const resultsPager = cursorPager("results", async (before) => {
    const name = modelSelect.value;
    const { results, next_cursor: next } = await api("GET", `/v1/results?limit=${RESULTS_PER_PAGE}`
      + `${name ? `&model=${encodeURIComponent(name)}` : ""}${before ? `&before=${encodeURIComponent(before)}` : ""}`);
    history.replaceChildren(...results.map((r) => h("tr", { "data-result": r.id },
      // ids start with their time: the random end tells results apart
      h("td", {}, h("code", { title: r.id }, `…${r.id.slice(-12)}`)), h("td", {}, `${r.model} v${r.version}`),
      h("td", {}, r.output.label), h("td", {}, fmtNum(r.output.probability, 3)),
      h("td", {}, `${r.latency_ms.toFixed(1)} ms`), h("td", {}, fmtTime(r.created_at)))));
    return next;
  });
  const refreshResults = () => resultsPager.refresh();
  pagerSlot.replaceWith(resultsPager.element);
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
        answer = await api("POST", path, tableRows(text.value) || { text: text.value });
      } else {
        throw new Error("Upload a file or paste some text first");
      }
    } catch (error) {
      output.replaceChildren();
      throw error;
    }
    if (answer.predictions) {  // many rows in one request (a CSV upload or JSON rows)
      output.replaceChildren(manyPredictions(answer));
      await refreshResults();
      return;
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

// Pasted JSON for a table model ({"features": {...}} or {"rows": [...]}), sent as it is; null for text.
function tableRows(value) {
  const trimmed = value.trim();
  if (!trimmed.startsWith("{")) return null;
  try {
    const body = JSON.parse(trimmed);
    return body && typeof body === "object" && ("features" in body || "rows" in body) ? body : null;
  } catch {
    return null;
  }
}

// One answer per row: its label, probability and every class's probability.
function manyPredictions(answer) {
  const labels = Object.keys(answer.predictions[0].probabilities);
  return h("div", { id: "predictions" },
    h("p", {}, `${answer.rows} rows · ${answer.model} v${answer.version} · ${answer.latency_ms.toFixed(1)} ms`),
    h("table", {}, h("thead", {}, h("tr", {}, ["Row", "Label", "Probability", ...labels].map((t) => h("th", {}, t)))),
      h("tbody", {}, answer.predictions.map((p, i) => h("tr", { "data-row": i },
        h("td", {}, i + 1), h("td", { class: "prediction" }, p.label), h("td", {}, fmtNum(p.probability, 3)),
        ...labels.map((label) => h("td", {}, fmtNum(p.probabilities[label], 3))))))));
}
