// Runs side by side (tasks, or a sweep's trials): their curves overlaid, a parallel-coordinates
// plot of parameters against the metric, and a table of the parameters that differ. Drawn for a
// thousand runs as readily as for two: one SVG path per run, colour by the metric, no per-point
// elements; the exact values are in the table.

import { api } from "./api.js";
import { fmtNum, h, s } from "./dom.js";

const SCALE = ["#c0392b", "#e67e22", "#f1c40f", "#7cb342", "#2e7d32"];  // worse -> better

// The colour of a value of the metric on the runs' range (better is greener).
function colorOf(value, lo, hi, better) {
  if (typeof value !== "number" || !(hi > lo)) return "#8c959f";
  let t = (value - lo) / (hi - lo);
  if (better === "min") t = 1 - t;
  return SCALE[Math.min(SCALE.length - 1, Math.floor(t * SCALE.length))];
}

const shown = (v) => (typeof v === "number" ? String(Number(v.toPrecision(4))) : JSON.stringify(v));

// The metrics the runs report per epoch, the chosen one first.
export function metricNames(runs) {
  const names = new Set();
  for (const run of runs) for (const point of run.history.slice(-1)) for (const [k, v] of Object.entries(point)) if (typeof v === "number" && k !== "epoch" && k !== "epochs") names.add(k);
  return [...names].sort();
}

function range(values) {
  const nums = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  return nums.length ? [Math.min(...nums), Math.max(...nums)] : [0, 1];
}

// Every run's curve of `metric` against epochs, on one chart.
export function overlaidCurves(runs, metric, mode, { width = 640, height = 280 } = {}) {
  const pad = { l: 58, r: 18, t: 24, b: 40 };
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `${metric} per epoch`, "data-chart": "curves" });
  svg.append(s("title", {}, `${metric} per epoch, one line per run`), s("text", { x: pad.l, y: 14 }, `${metric} per epoch (${runs.length} runs)`));
  const points = runs.flatMap((r) => r.history.filter((p) => typeof p[metric] === "number").map((p) => [p.epoch, p[metric]]));
  if (!points.length) { svg.append(s("text", { x: pad.l, y: height / 2 }, `no run reports ${metric} yet`)); return svg; }
  const [x0, x1r] = range(points.map((p) => p[0])), x1 = Math.max(x1r, x0 + 1);
  let [y0, y1] = range(points.map((p) => p[1]));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  svg.append(s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#aab4c0" }),
    s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#aab4c0" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) svg.append(s("text", { x: pad.l - 6, y: Y(y) + 4, "text-anchor": "end", class: "tick" }, y.toFixed(3)));
  const step = Math.max(1, Math.ceil((x1 - x0) / 12));
  for (let x = x0; x <= x1; x += step) svg.append(s("text", { x: X(x), y: height - pad.b + 14, "text-anchor": "middle", class: "tick" }, x));
  svg.append(s("text", { x: (pad.l + width - pad.r) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, "epoch"));
  const [m0, m1] = range(runs.map((r) => r.metrics[metric]));
  for (const run of runs) {
    const pts = run.history.filter((p) => typeof p[metric] === "number");
    if (!pts.length) continue;
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p.epoch).toFixed(1)},${Y(p[metric]).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, fill: "none", stroke: colorOf(run.metrics[metric], m0, m1, mode), "stroke-width": runs.length > 50 ? 1 : 2, "stroke-opacity": runs.length > 50 ? 0.5 : 0.9, class: "series", "data-run": run.id },
      s("title", {}, `${run.name}: ${metric} ${fmtNum(run.metrics[metric])} (${run.state})`)));
  }
  return svg;
}

// One axis per differing parameter and one for the metric; each run a line across them.
export function parallelCoordinates(runs, params, metric, mode, { width = 760, height = 300 } = {}) {
  const axes = [...params, metric];
  const pad = { l: 40, r: 40, t: 34, b: 30 };
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "parameters against the metric", "data-chart": "parallel" });
  svg.append(s("title", {}, `parallel coordinates: ${axes.join(", ")}`));
  if (axes.length < 2) { svg.append(s("text", { x: pad.l, y: height / 2 }, "no parameter differs between these runs")); return svg; }
  const gap = (width - pad.l - pad.r) / (axes.length - 1);
  const scales = axes.map((name) => {
    const values = runs.map((r) => (name === metric ? r.metrics[metric] : r.params[name]));
    if (values.every((v) => typeof v === "number" || v === undefined || v === null)) {
      let [lo, hi] = range(values);
      const log = name !== metric && lo > 0 && hi / lo >= 100;  // a learning rate reads better on a log axis
      if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
      const f = log ? Math.log10 : (v) => v;
      return { ticks: [lo, hi], at: (v) => (typeof v === "number" ? (f(v) - f(lo)) / (f(hi) - f(lo)) : null) };
    }
    const levels = [...new Set(values.map(shown))].sort();
    return { ticks: levels, at: (v) => (levels.length < 2 ? 0.5 : levels.indexOf(shown(v)) / (levels.length - 1)), levels };
  });
  const Y = (t) => height - pad.b - t * (height - pad.t - pad.b);
  const [m0, m1] = range(runs.map((r) => r.metrics[metric]));
  const lines = s("g", { class: "runs" });
  for (const run of runs) {
    const ys = axes.map((name, i) => scales[i].at(name === metric ? run.metrics[metric] : run.params[name]));
    if (ys.some((y) => y === null)) continue;
    const d = ys.map((y, i) => `${i ? "L" : "M"}${(pad.l + i * gap).toFixed(1)},${Y(y).toFixed(1)}`).join(" ");
    lines.append(s("path", { d, fill: "none", stroke: colorOf(run.metrics[metric], m0, m1, mode), "stroke-opacity": runs.length > 50 ? 0.45 : 0.9, class: "run", "data-run": run.id },
      s("title", {}, `${run.name}: ${axes.map((a) => `${a} ${shown(a === metric ? run.metrics[metric] : run.params[a])}`).join(", ")}`)));
  }
  svg.append(lines);
  axes.forEach((name, i) => {
    const x = pad.l + i * gap, scale = scales[i];
    svg.append(s("line", { x1: x, y1: pad.t, x2: x, y2: height - pad.b, stroke: "#57606a", class: "axis", "data-axis": name }),
      s("text", { x, y: pad.t - 14, "text-anchor": "middle", class: "axis-label" }, name));
    const ticks = scale.levels
      ? scale.levels.slice(0, 8).map((label, j) => [label, j / Math.max(1, scale.levels.length - 1)])
      : scale.ticks.map((v) => [shown(v), scale.at(v)]);
    for (const [label, t] of ticks) svg.append(s("text", { x: x + 4, y: Y(t) + 4, class: "tick" }, label));
  });
  return svg;
}

// A row per run: the parameters that differ, the state, and the metric (best first).
export function differingTable(runs, params, metric, mode) {
  const sign = mode === "min" ? 1 : -1;
  const sorted = [...runs].sort((a, b) => sign * ((a.metrics[metric] ?? (sign > 0 ? Infinity : -Infinity)) - (b.metrics[metric] ?? (sign > 0 ? Infinity : -Infinity))));
  return h("table", { id: "differing-params" },
    h("caption", {}, params.length ? `Parameters that differ (${params.length}), best ${metric} first` : "No parameter differs between these runs"),
    h("thead", {}, h("tr", {}, ["Run", "State", ...params, metric].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, sorted.map((run) => h("tr", { "data-run": run.id },
      h("td", {}, run.kind === "task" ? h("a", { href: `#task/${run.id}` }, run.id) : h("a", { href: `#sweep/${run.sweep_id}` }, run.name)),
      h("td", {}, h("span", { class: `state state-${run.state}` }, run.state)),
      params.map((p) => h("td", {}, run.params[p] === undefined ? "" : shown(run.params[p]))),
      h("td", {}, fmtNum(run.metrics[metric]))))));
}

// The comparison page body for `ids` (task ids and sweep:trial ids).
export async function comparisonView(ids, { metric, mode } = {}) {
  const started = performance.now();
  const data = await api("POST", "/v1/runs/compare", { ids });
  const names = metricNames(data.runs);
  let chosen = metric && names.includes(metric) ? metric : (names.includes("val_accuracy") ? "val_accuracy" : names[0]);
  let direction = mode || (chosen && chosen.endsWith("loss") ? "min" : "max");
  const body = h("div", { id: "comparison-views" });
  const draw = () => {
    body.replaceChildren(
      h("section", { class: "card" }, overlaidCurves(data.runs, chosen, direction)),
      h("section", { class: "card" }, h("h3", {}, "Parameters against the metric"), parallelCoordinates(data.runs, data.differing_params, chosen, direction)),
      h("section", { class: "card scroll" }, differingTable(data.runs, data.differing_params, chosen, direction)));
  };
  const select = h("select", { id: "compare-metric", "aria-label": "metric" }, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  select.addEventListener("change", () => { chosen = select.value; direction = chosen.endsWith("loss") ? "min" : "max"; draw(); });
  draw();
  const took = performance.now() - started;
  return h("div", { id: "comparison", "data-runs": data.runs.length, "data-render-ms": took.toFixed(0) },
    h("div", { class: "row" }, h("h2", {}, `Comparing ${data.runs.length} runs`), h("label", {}, "Metric ", select)), body);
}
