// Dataset rows as a person sees them (an image, a text, a row's values), and where a model errs:
// its per-class scores, its confusion matrix as a heat map, its most confidently wrong examples.

import { api } from "./api.js";
import { fmtNum, h } from "./dom.js";

export const samplesPath = (ref, query) => {
  const [name, version] = ref.split("@");
  return `/v1/datasets/${encodeURIComponent(name)}/${encodeURIComponent(version)}/samples?${new URLSearchParams(query)}`;
};

export function sampleView(sample, caption) {
  const body = sample.image ? h("img", { src: sample.image, alt: `${sample.label} (${sample.id})`, class: "sample-image" })
    : sample.text !== undefined ? h("blockquote", { class: "sample-text" }, sample.text)
      : h("dl", { class: "sample-row" }, Object.entries(sample.features || {}).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  return h("figure", { class: sample.image ? "sample" : "sample sample-wide", "data-sample-id": sample.id }, body, h("figcaption", {}, caption || sample.label));
}

// The Datasets page's sample browser: a split, a class, a grid.
export function sampleBrowser(ref, labels) {
  const split = h("select", { id: "samples-split", "aria-label": "split" }, ["train", "val", "test"].map((s) => h("option", { value: s }, s)));
  const label = h("select", { id: "samples-class", "aria-label": "class" }, h("option", { value: "" }, "every class"),
    labels.map((l) => h("option", { value: l }, l)));
  const grid = h("div", { class: "sample-grid", id: "samples" });
  const load = async () => {
    const query = { split: split.value, limit: 24 };
    if (label.value) query.label = label.value;
    const { samples } = await api("GET", samplesPath(ref, query));
    grid.replaceChildren(...(samples.length ? samples.map((s) => sampleView(s)) : [h("p", { class: "muted" }, "No rows.")]));
  };
  split.onchange = load;
  label.onchange = load;
  load();
  return h("section", { class: "card", id: "sample-browser" }, h("h3", {}, "Samples"),
    h("div", { class: "row" }, "Split ", split, " Class ", label), grid);
}

// Two versions side by side: each class's precision, recall and F1 in both, and the F1 change.
export function evaluationComparison(name, a, b) {
  const ea = a.metrics.test_evaluation, eb = b.metrics.test_evaluation;
  const theirs = Object.fromEntries(eb.per_class.map((c) => [c.label, c]));
  const delta = (x, y) => (typeof x === "number" && typeof y === "number" ? `${y - x >= 0 ? "+" : ""}${(y - x).toFixed(3)}` : "–");
  return h("table", { id: "evaluation-compare", "data-versions": `${a.version},${b.version}` },
    h("thead", {}, h("tr", {}, ["Class", `Precision v${a.version}`, `v${b.version}`, `Recall v${a.version}`, `v${b.version}`,
      `F1 v${a.version}`, `v${b.version}`, "F1 change"].map((t) => h("th", {}, t)))),
    h("tbody", {},
      h("tr", { "data-class": "(all)" }, h("th", { scope: "row" }, "accuracy"), h("td", { colspan: 5 }, ""),
        h("td", {}, fmtNum(a.metrics.test_accuracy, 3)), h("td", {}, fmtNum(b.metrics.test_accuracy, 3))),
      ea.per_class.map((c) => {
        const o = theirs[c.label] || {};
        return h("tr", { "data-class": c.label }, h("th", { scope: "row" }, c.label),
          h("td", {}, fmtNum(c.precision, 3)), h("td", {}, fmtNum(o.precision, 3)),
          h("td", {}, fmtNum(c.recall, 3)), h("td", {}, fmtNum(o.recall, 3)),
          h("td", {}, fmtNum(c.f1, 3)), h("td", {}, fmtNum(o.f1, 3)), h("td", { class: "delta" }, delta(c.f1, o.f1)));
      })),
    h("caption", {}, `${name}: v${a.version} against v${b.version} on their test splits`));
}

// A version's test evaluation: per class, the confusion matrix, the worst mistakes; `others`:
// the model's other versions with an evaluation, to compare with.
export function evaluationView(name, version, evaluation, datasetRef, others = []) {
  const { labels, confusion_matrix: matrix, per_class: perClass, worst } = evaluation;
  const rowTotals = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const cell = (count, i, j) => {
    const share = rowTotals[i] ? count / rowTotals[i] : 0;
    // A light tint with dark text up to half the row, then a deep shade with white text: every
    // cell keeps a 4.5:1 contrast (a continuous scale passes through shades neither text reads on).
    const strong = share >= 0.5;
    const alpha = strong ? 0.75 + 0.5 * (share - 0.5) : share;
    const [r, g, b] = (i === j ? [0, 80, 0] : [140, 0, 0]).map((c) => Math.round(alpha * c + (1 - alpha) * 255));
    return h("td", { class: "cm-cell", "data-count": count, title: `true ${labels[i]}, predicted ${labels[j]}: ${count}`,
      style: `background: rgb(${r}, ${g}, ${b}); color: ${strong ? "#fff" : "#1f2328"}` }, count);
  };
  const worstBox = h("div", { class: "sample-grid", id: "worst-examples" });
  if (worst.length && datasetRef) {
    api("GET", samplesPath(datasetRef, { split: "test", ids: worst.map((w) => w.id).join(",") })).then(({ samples }) => {
      const byId = Object.fromEntries(samples.map((s) => [s.id, s]));
      worstBox.replaceChildren(...worst.filter((w) => byId[w.id]).map((w) =>
        sampleView(byId[w.id], `${w.label} read as ${w.predicted} (p=${fmtNum(w.probability, 3)})`)));
    }).catch(() => worstBox.replaceChildren(h("p", { class: "muted" }, `The examples of ${datasetRef} are no longer stored.`)));
  }
  const comparison = h("div", { id: "comparison" });
  const candidates = others.filter((o) => o.version !== version && o.metrics.test_evaluation);
  const me = others.find((o) => o.version === version) || { version, metrics: { test_evaluation: evaluation } };
  const compareSelect = candidates.length ? h("select", { id: "compare-with", "aria-label": "compare with version", onchange: (e) => {
    const other = candidates.find((o) => String(o.version) === e.target.value);
    comparison.replaceChildren(other ? evaluationComparison(name, me, other) : "");
  } }, h("option", { value: "" }, "compare with…"), candidates.map((o) => h("option", { value: o.version }, `v${o.version}`))) : null;
  return h("section", { class: "card", id: "evaluation", "data-version": version },
    h("div", { class: "row" }, h("h3", {}, `${name} v${version} on the test split`), compareSelect),
    comparison,
    h("div", { class: "charts" },
      h("table", { class: "per-class" }, h("thead", {}, h("tr", {}, ["Class", "Precision", "Recall", "F1", "Support"].map((t) => h("th", {}, t)))),
        h("tbody", {}, perClass.map((c) => h("tr", {}, h("td", {}, c.label), h("td", {}, fmtNum(c.precision, 3)),
          h("td", {}, fmtNum(c.recall, 3)), h("td", {}, fmtNum(c.f1, 3)), h("td", {}, c.support))))),
      h("table", { class: "confusion", id: "confusion-matrix" },
        h("caption", {}, "Confusion matrix: rows are the true class, columns the predicted one"),
        h("thead", {}, h("tr", {}, h("th", {}, ""), labels.map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", {}, matrix.map((row, i) => h("tr", {}, h("th", { scope: "row" }, labels[i]), row.map((count, j) => cell(count, i, j))))))),
    h("h3", {}, "Most confidently wrong"), worst.length ? worstBox : h("p", { class: "muted" }, "No mistakes on the test split."));
}
