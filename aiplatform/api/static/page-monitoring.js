// Monitoring: one model's traffic, errors, latency, batches, classes, drift and live quality over a
// window, with the alert rules' thresholds and the alerts that fired drawn on the charts.

import { api } from "./api.js";
import { fmtTime, h, page, poll, showError } from "./dom.js";
import { timeChart } from "./charts.js";

const WINDOWS = ["15m", "1h", "6h", "24h", "7d"];
const state = { model: null, version: "", window: "1h" };

const seriesName = (labels) => Object.entries(labels).filter(([, v]) => v !== "").map(([k, v]) => `${k} ${v}`).join(", ") || "all";

export async function monitoringPage(model) {
  const root = page();
  const { models } = await api("GET", "/v1/models");
  if (!models.length) { root.replaceChildren(h("h2", {}, "Monitoring"), h("p", { class: "muted" }, "No models registered yet.")); return; }
  if (model) state.model = model;
  if (!models.some((m) => m.name === state.model)) state.model = models[0].name;
  const { versions } = await api("GET", `/v1/models/${encodeURIComponent(state.model)}`);
  const select = (id, label, options, value, onChange) => h("label", {}, `${label} `,
    h("select", { id, onchange: (e) => onChange(e.target.value) }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
  const controls = h("div", { class: "row" },
    select("monitor-model", "Model", models.map((m) => [m.name, m.name]), state.model, (v) => { state.model = v; state.version = ""; location.hash = `#monitoring/${encodeURIComponent(v)}`; }),
    select("monitor-version", "Version", [["", "every version"], ...versions.map((v) => [String(v.version), `v${v.version}`])], state.version, (v) => { state.version = v; draw(); }),
    select("monitor-window", "Window", WINDOWS.map((w) => [w, `last ${w}`]), state.window, (v) => { state.window = v; draw(); }));
  const body = h("div", { id: "monitoring" });
  root.replaceChildren(h("h2", {}, "Monitoring"), controls, body);

  async function draw() {
    const query = new URLSearchParams({ window: state.window, ...(state.version ? { version: state.version } : {}) });
    const o = await api("GET", `/v1/monitoring/models/${encodeURIComponent(state.model)}?${query}`);
    const modelCharts = o.charts.filter((c) => c.per_model), queueCharts = o.charts.filter((c) => !c.per_model);
    const chart = (c) => (c.available
      ? timeChart(c.title, c.series.map((sr) => ({ name: seriesName(sr.labels), points: sr.points })),
        { since: o.since, until: o.until, unit: c.unit, thresholds: c.thresholds, alerts: alertsFor(o.alerts, c, o.charts) })
      : h("div", { class: "chart muted", "data-chart": c.title }, `${c.title}: needs Prometheus (install it; \`aip up\` starts it)`));
    const outcomes = Object.entries(o.totals).sort();
    body.replaceChildren(
      h("p", { class: "muted", id: "monitor-source" }, o.source === "prometheus" ? "From Prometheus." :
        `From the alert engine's signals (one point per evaluation)${o.source_problem ? `: ${o.source_problem}` : "; Prometheus gives more charts"}.`),
      h("section", { class: "card" }, h("h3", {}, `Requests in the last ${o.window}`),
        h("table", { id: "monitor-totals" }, h("thead", {}, h("tr", {}, h("th", {}, "Outcome"), h("th", {}, "Requests"))),
          h("tbody", {}, outcomes.length ? outcomes.map(([outcome, count]) => h("tr", { "data-outcome": outcome }, h("td", {}, outcome), h("td", { class: "count" }, count)))
            : h("tr", {}, h("td", { colspan: 2, class: "muted" }, "none"))))),
      qualityCard(o.quality),
      h("div", { class: "charts" }, modelCharts.map(chart)),
      h("h3", {}, "Training queue"), h("div", { class: "charts" }, queueCharts.map(chart)),
      h("h3", {}, "Alerts in this window"),
      o.alerts.length ? h("table", { id: "monitor-alerts" }, h("thead", {}, h("tr", {}, ["State", "Rule", "Message", "Fired", "Resolved"].map((t) => h("th", {}, t)))),
        h("tbody", {}, o.alerts.map((a) => h("tr", { "data-alert-rule": a.rule, "data-state": a.state }, h("td", {}, a.state), h("td", {}, a.rule),
          h("td", {}, a.message), h("td", {}, fmtTime(a.started_at)), h("td", {}, fmtTime(a.resolved_at))))))
        : h("p", { class: "muted" }, "None."));
  }
  await draw();
  poll(() => draw().catch(showError));
}

// Accuracy and macro-F1 per version of the predictions labeled in the quality window.
function qualityCard(quality) {
  if (!quality) return "";
  const hours = quality.window_s / 3600;
  return h("section", { class: "card" }, h("h3", {}, `Live quality (labeled predictions of the last ${hours} h)`),
    quality.versions.length
      ? h("table", { id: "monitor-quality" }, h("thead", {}, h("tr", {}, ["Version", "Accuracy", "Macro-F1", "Labeled", "Right"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, quality.versions.map((q) => h("tr", { "data-version": q.version },
          h("td", {}, `v${q.version}`), h("td", { class: "accuracy" }, `${(q.accuracy * 100).toFixed(1)}%`),
          h("td", {}, q.macro_f1.toFixed(3)), h("td", { class: "count" }, q.labeled), h("td", {}, q.correct)))))
      : h("p", { class: "muted" }, "No labeled predictions yet: label results on the Inference page or with `aip results label`."));
}

// An alert goes on the chart of its signal (its series is `signal{labels}`); alerts of signals with
// no model chart of their own (a canary rolled back, say) go on the request rate's.
function alertsFor(alerts, chart, charts) {
  const charted = new Set(charts.filter((c) => c.per_model).map((c) => c.name));
  return alerts.filter((a) => {
    const signal = (a.series || "").split("{")[0];
    return signal === chart.name || (!charted.has(signal) && chart.name === "request_rate");
  });
}
