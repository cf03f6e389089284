// The Datasets page: versions, profiles and drift.

import { api, authedImage } from "./api.js";
import { barChart } from "./charts.js";
import { act, fmtNum, fmtTime, h, page } from "./dom.js";
import { sampleBrowser } from "./samples.js";

export async function datasetsPage(selected) {
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
      h("h3", {}, "Manifest"), h("pre", { class: "logs", tabindex: "0", "aria-label": "the version's manifest" }, JSON.stringify({ ...manifest, splits: Object.fromEntries(
        Object.entries(manifest.splits).map(([k, v]) => [k, { rows: v.rows, files: v.files.length }])) }, null, 2))),
      sampleBrowser(profile.ref, profile.labels || []),
      await analysisSection(name, version));
  }
}

// The dataset's analysis (profile charts, duplicates, leakage) and a drift check against live inputs.
export async function analysisSection(name, version) {
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
  const modelSelect = h("select", { id: "drift-model", "aria-label": "model to compare with this dataset" }, models.map((m) => h("option", { value: m.name }, m.name)));
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

export function driftReport(r) {
  return h("div", {},
    h("p", {}, "Verdict: ", h("strong", { id: "drift-verdict", class: `verdict-${r.verdict}` }, r.verdict),
      ` (PSI ${fmtNum(r.score, 3)}, worst: ${r.worst_feature}) over ${r.live_samples} recent predictions against ${r.dataset} (${r.split})`),
    h("table", {}, h("thead", {}, h("tr", {}, ["Feature", "PSI", "Verdict"].map((t) => h("th", {}, t)))),
      h("tbody", {}, Object.entries(r.features).map(([f, v]) => h("tr", { "data-feature": f },
        h("td", {}, f), h("td", {}, fmtNum(v.psi, 3)), h("td", {}, v.verdict))))),
    h("div", { class: "charts" }, Object.entries(r.chart_urls).map(([chart, url]) =>
      h("figure", {}, authedImage(url, { alt: chart, "data-chart-image": chart }), h("figcaption", {}, chart)))));
}
