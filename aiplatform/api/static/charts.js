// Charts drawn as SVG by the UI itself (no CDN).

import { s } from "./dom.js";

const COLORS = ["#1f6feb", "#e5534b", "#2da44e", "#bf8700", "#8250df", "#1b7c83", "#cf222e", "#57606a"];

// Per-epoch curves: labelled axes, a legend with colour keys, each point's value on hover.
export function lineChart(title, series, { width = 440, height = 230, xLabel = "epoch" } = {}) {
  const pad = { l: 58, r: 18, t: 24, b: 40 };
  const legendRows = Math.ceil(series.length / 3);
  const points = series.flatMap((sr) => sr.points);
  const svg = s("svg", { width, height: height + 16 * legendRows, viewBox: `0 0 ${width} ${height + 16 * legendRows}`, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("title", {}, title), s("text", { x: pad.l, y: 14 }, title));
  if (!points.length) { svg.append(s("text", { x: pad.l, y: height / 2 }, "no epochs yet")); return svg; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  svg.append(s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#aab4c0" }));
  svg.append(s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#aab4c0" }));
  const digits = y1 - y0 >= 10 ? 1 : 3;
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    svg.append(s("text", { x: pad.l - 6, y: Y(y) + 4, "text-anchor": "end", class: "tick" }, y.toFixed(digits)));
  }
  const ticks = [...new Set(xs)];
  const every = Math.ceil(ticks.length / 12);  // at most a dozen labels on the x axis
  ticks.filter((_, i) => i % every === 0).forEach((x) =>
    svg.append(s("text", { x: X(x), y: height - pad.b + 14, "text-anchor": "middle", class: "tick" }, x)));
  svg.append(s("text", { x: (pad.l + width - pad.r) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, xLabel));
  series.forEach((sr, i) => {
    const color = COLORS[i % COLORS.length];
    if (sr.points.length) {
      const d = sr.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": sr.name }));
      for (const p of sr.points) {
        svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: color, "data-series": sr.name },
          s("title", {}, `${sr.name} at ${xLabel} ${p[0]}: ${p[1].toFixed(4)}`)));
      }
    }
    const lx = pad.l + (i % 3) * 125, ly = height + 4 + 16 * Math.floor(i / 3);
    svg.append(s("rect", { x: lx, y: ly - 8, width: 10, height: 10, fill: color, class: "legend-key", "data-series": sr.name }),
      s("text", { x: lx + 14, y: ly + 1 }, sr.name));
  });
  return svg;
}

export function barChart(title, values, labels, { width = 420, height = 180 } = {}) {
  const pad = { l: 10, r: 10, t: 22, b: 20 };
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("text", { x: pad.l, y: 14 }, title));
  const max = Math.max(...values, 1e-9), w = (width - pad.l - pad.r) / Math.max(1, values.length);
  values.forEach((v, i) => {
    const bh = (v / max) * (height - pad.t - pad.b);
    svg.append(s("rect", { x: pad.l + i * w + 1, y: height - pad.b - bh, width: Math.max(1, w - 2), height: bh, fill: "#1f6feb" }));
    if (labels) svg.append(s("text", { x: pad.l + i * w + w / 2 - 4, y: height - 6 }, labels[i]));
  });
  return svg;
}

// A chart over time: one line per series (a legend with colour keys), the alert rules' thresholds
// as dashed lines, and alerts as shaded bands from when they fired to when they resolved.
const fmtValue = (v, unit) => (v === 0 ? "0" : unit === "s" ? (v < 1 ? `${(v * 1000).toPrecision(3)} ms` : `${v.toPrecision(3)} s`)
  : unit === "share" ? `${(v * 100).toPrecision(3)}%` : `${v.toPrecision(3)}`);
const fmtClock = (t, span) => new Date(t * 1000).toLocaleTimeString([], span > 86400 ? { weekday: "short", hour: "2-digit" } : { hour: "2-digit", minute: "2-digit" });

export function timeChart(title, series, { since, until, unit = "", thresholds = [], alerts = [], width = 460, height = 230 } = {}) {
  const pad = { l: 64, r: 12, t: 24, b: 28 };
  const perRow = series.some((sr) => sr.name.length > 18) ? 1 : 3;  // long names get a row each
  const legendRows = Math.ceil(series.length / perRow);
  const fullHeight = height + 8 + 16 * legendRows;
  const svg = s("svg", { width, height: fullHeight, viewBox: `0 0 ${width} ${fullHeight}`, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("title", {}, title), s("text", { x: pad.l, y: 14 }, `${title}${unit && unit !== "share" ? ` (${unit})` : ""}`));
  const values = series.flatMap((sr) => sr.points.map((p) => p[1])).concat(thresholds.map((t) => t.value));
  let y0 = Math.min(0, ...values), y1 = Math.max(...values, 0);
  if (y1 - y0 < 1e-12) y1 = y0 + 1;
  const X = (x) => pad.l + ((x - since) / (until - since)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const alert of alerts) {
    const x0 = X(Math.max(since, alert.started_at)), x1 = X(Math.min(until, alert.resolved_at || until));
    svg.append(s("rect", { x: x0, y: pad.t, width: Math.max(2, x1 - x0), height: height - pad.t - pad.b, fill: "#e5534b",
      "fill-opacity": 0.15, class: "alert-band", "data-alert-rule": alert.rule }, s("title", {}, `${alert.rule}: ${alert.message}`)));
  }
  svg.append(s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#aab4c0" }));
  svg.append(s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#aab4c0" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) svg.append(s("text", { x: 4, y: Y(y) + 4 }, fmtValue(y, unit)));
  [since, (since + until) / 2, until].forEach((t, i) => svg.append(s("text", { x: X(t), y: height - 10,
    "text-anchor": ["start", "middle", "end"][i] }, fmtClock(t, until - since))));
  for (const threshold of thresholds) {
    svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: Y(threshold.value), y2: Y(threshold.value), stroke: "#cf222e",
      "stroke-dasharray": "5 4", class: "threshold", "data-rule": threshold.rule }, s("title", {}, `${threshold.rule}: ${threshold.op} ${fmtValue(threshold.value, unit)}`)));
  }
  if (!series.length) svg.append(s("text", { x: pad.l + 8, y: height / 2 }, "no data in this window"));
  series.forEach((sr, i) => {
    const color = COLORS[i % COLORS.length];
    if (sr.points.length) {
      const d = sr.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": sr.name }));
      for (const p of sr.points.length < 60 ? sr.points : []) {
        svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }, s("title", {}, `${sr.name}: ${fmtValue(p[1], unit)} at ${new Date(p[0] * 1000).toLocaleTimeString()}`)));
      }
    }
    const lx = pad.l + (i % perRow) * 130, ly = height + 8 + 16 * Math.floor(i / perRow);
    svg.append(s("rect", { x: lx, y: ly - 8, width: 10, height: 10, fill: color }), s("text", { x: lx + 14, y: ly + 1 }, sr.name));
  });
  return svg;
}
