// The Inference page: predict from an upload or a paste, and past results with their true labels.

import { api, authedDownload } from "./api.js";
import { act, cursorPager, fmtNum, fmtTime, h, page, poll, progressBar, s, showError } from "./dom.js";
import { modelKinds, pastedBody, uploadAccept } from "./kinds.js";

const RESULTS_PER_PAGE = 20;
const SINCE = { "any time": 0, "last hour": 3600, "last day": 86400, "last week": 7 * 86400 };

// A kept input, small: an image's thumbnail, a text's first words, or why there is none.
export function inputPreview(preview, { large = false } = {}) {
  if (!preview) return "";
  if (preview.kind === "image") return h("img", { src: preview.data_url, class: large ? "input-large" : "thumb", alt: `the input image (${preview.width}×${preview.height})` });
  return h("span", { class: preview.kind === "text" ? "snippet" : "muted" }, preview.text + (preview.truncated ? "…" : ""));
}

// A control that gives a past prediction its true label (one of its version's classes, the keys of
// its probabilities) or replaces the one it has; `saved` runs after the store took it.
function trueLabelControl(r, saved) {
  const classes = Object.keys(r.output.probabilities || {});
  const current = r.feedback ? r.feedback.label : "";
  const select = h("select", { class: "true-label", "data-result": r.id, "aria-label": `True label of result ${r.id}` },
    current ? [] : h("option", { value: "" }, "–"),
    classes.map((c) => h("option", { value: c, selected: c === current }, c)));
  select.addEventListener("change", () => act(select, async () => {
    if (!select.value) return;
    await api("POST", `/v1/results/${encodeURIComponent(r.id)}/feedback`, { label: select.value });
    if (saved) await saved();
  }));
  return select;
}

export async function inferencePage() {
  const root = page();
  const kinds = await modelKinds().catch((err) => { showError(err); return []; });
  const modelSelect = h("select", { id: "model-select" });
  const targetSelect = h("select", { id: "target-select" });
  const fileInput = h("input", { type: "file", id: "file-input", accept: uploadAccept(kinds) });
  const text = h("textarea", { id: "text-input",
    placeholder: `…or paste here (${kinds.map((k) => k.paste_hint).join("; ")})` });
  const output = h("div", { id: "prediction" });
  const history = h("tbody", { id: "result-rows" });
  const pagerSlot = h("div");
  const versionFilter = h("select", { id: "results-version" }, h("option", { value: "" }, "all"));
  const labelFilter = h("input", { type: "text", id: "results-label", placeholder: "any", size: 10 });
  const sinceFilter = h("select", { id: "results-since" }, Object.keys(SINCE).map((k) => h("option", { value: k }, k)));
  root.replaceChildren(h("h2", {}, "Inference"),
    h("section", { class: "card" },
      h("div", { class: "row" }, h("label", {}, "Model ", modelSelect), h("label", {}, "Version ", targetSelect)),
      h("label", {}, "File ", fileInput), text,
      h("div", { class: "row" }, h("button", { class: "primary", id: "predict", onclick: (e) => act(e.target, predict) }, "Predict")),
      output),
    h("section", { class: "card" }, h("h3", {}, "Past results"),
      h("div", { class: "row", id: "result-filters" },
        h("label", {}, "Version ", versionFilter), h("label", {}, "Predicted label ", labelFilter), h("label", {}, "Since ", sinceFilter)),
      h("table", {},
        h("thead", {}, h("tr", {}, ["Input", "Result", "Model", "Label", "Probability", "True label", "Latency", "Time"].map((t) => h("th", { scope: "col" }, t)))), history),
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
    versionFilter.replaceChildren(h("option", { value: "" }, "all"), ...model.versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
    await resultsPager.reset();  // another model's page: from its newest results
  };
  const resultsPager = cursorPager("results", async (before) => {
    const name = modelSelect.value;
    const query = new URLSearchParams({ limit: RESULTS_PER_PAGE, previews: "true" });
    if (name) query.set("model", name);
    if (name && versionFilter.value) query.set("version", versionFilter.value);
    if (labelFilter.value.trim()) query.set("label", labelFilter.value.trim());
    if (SINCE[sinceFilter.value]) query.set("since", String(Date.now() / 1000 - SINCE[sinceFilter.value]));
    if (before) query.set("before", before);
    const { results, next_cursor: next } = await api("GET", `/v1/results?${query}`);
    history.replaceChildren(...results.map((r) => h("tr", { "data-result": r.id },
      h("td", {}, inputPreview(r.preview)),
      // ids start with their time: the random end tells results apart
      h("td", {}, h("a", { href: `#result/${encodeURIComponent(r.id)}`, title: r.id }, h("code", {}, `…${r.id.slice(-12)}`))), h("td", {}, `${r.model} v${r.version}`),
      h("td", {}, r.output.label), h("td", {}, fmtNum(r.output.probability, 3)),
      h("td", {}, trueLabelControl(r, () => resultsPager.refresh())),
      h("td", {}, `${r.latency_ms.toFixed(1)} ms`), h("td", {}, fmtTime(r.created_at)))));
    return next;
  });
  for (const filter of [versionFilter, labelFilter, sinceFilter]) filter.addEventListener("change", () => act(null, () => resultsPager.reset()));
  labelFilter.addEventListener("keydown", (e) => { if (e.key === "Enter") act(null, () => resultsPager.reset()); });
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
        answer = await api("POST", path, pastedBody(kinds, text.value));
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
            h("td", { class: "muted" }, c.text + (c.text.length >= 160 ? "…" : ""))))))) : "");
    await refreshResults();
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

// One past prediction: what was sent, every class's probability, and where it came from.
export async function resultPage(resultId) {
  const root = page();
  const [r, feedback] = await Promise.all([
    api("GET", `/v1/results/${encodeURIComponent(resultId)}?preview=true`),
    api("GET", `/v1/results/${encodeURIComponent(resultId)}/feedback`)]);
  const feedbackHistory = feedback.history.length
    ? h("table", { id: "result-feedback-history" }, h("thead", {}, h("tr", {}, ["Label", "Replaced", "By", "When"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, feedback.history.map((e) => h("tr", {}, h("td", {}, e.label), h("td", {}, e.previous_label ?? "–"), h("td", {}, e.labeled_by), h("td", {}, fmtTime(e.labeled_at))))))
    : h("p", { class: "muted" }, "No label given yet.");
  const probs = Object.entries(r.output.probabilities || {}).sort((a, b) => b[1] - a[1]);
  const features = Object.entries(r.features || {});
  root.replaceChildren(h("p", {}, h("a", { href: "#inference" }, "← inference")),
    h("h2", {}, "Result ", h("code", {}, r.id)),
    h("div", { class: "row", id: "result-detail" },
      h("section", { class: "card", id: "result-input" }, h("h3", {}, "Input"), inputPreview(r.preview, { large: true }),
        r.input_uri ? h("p", {}, authedDownload(`/v1/results/${encodeURIComponent(r.id)}/input`, `input-${r.id}`, "Download the input")) : ""),
      h("section", { class: "card" }, h("h3", {}, "Answer"),
        h("p", {}, "Predicted ", h("strong", { id: "result-label" }, r.output.label), ` (${fmtNum(r.output.probability, 3)})`),
        h("table", { class: "probs", id: "result-probabilities" }, h("tbody", {}, probs.map(([label, p]) =>
          h("tr", { "data-label": label }, h("td", {}, label), h("td", {}, progressBar(p, `${(p * 100).toFixed(2)}%`)))))),
        h("dl", { id: "result-facts" },
          h("dt", {}, "Model"), h("dd", {}, h("a", { href: `#models/${encodeURIComponent(r.model)}` }, `${r.model} v${r.version}`)),
          h("dt", {}, "Latency"), h("dd", {}, `${r.latency_ms.toFixed(1)} ms`),
          h("dt", {}, "Time"), h("dd", {}, fmtTime(r.created_at)),
          r.client_id ? [h("dt", {}, "Client's id"), h("dd", {}, r.client_id)] : []))),
    h("section", { class: "card", id: "result-feedback" }, h("h3", {}, "True label"),
      h("p", {}, h("label", {}, "Set or replace ", trueLabelControl(r, () => resultPage(resultId))),
        r.feedback ? h("span", { class: "muted", id: "result-verdict" },
          r.feedback.label === r.output.label ? " the prediction was right" : ` the prediction (${r.output.label}) was wrong`) : ""),
      feedbackHistory),
    h("section", { class: "card" }, h("h3", {}, "Drift features of the input"),
      features.length ? h("table", { id: "result-features" }, h("tbody", {}, features.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, fmtNum(v, 4))))))
        : h("p", { class: "muted" }, "none recorded")));
}
