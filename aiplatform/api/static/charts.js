// Charts drawn as SVG by the UI itself (no CDN).

import { s } from "./dom.js";

export function lineChart(title, series, { width = 420, height = 220 } = {}) {
  const pad = { l: 44, r: 10, t: 22, b: 28 };
  const points = series.flatMap((sr) => sr.points);
  const svg = s("svg", { width, height, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("text", { x: pad.l, y: 14 }, title));
  if (!points.length) { svg.append(s("text", { x: pad.l, y: height / 2 }, "no epochs yet")); return svg; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  svg.append(s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, stroke: "#aab4c0" }));
  svg.append(s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, stroke: "#aab4c0" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) svg.append(s("text", { x: 2, y: Y(y) + 4 }, y.toFixed(3)));
  for (const x of [...new Set(xs)]) svg.append(s("text", { x: X(x) - 3, y: height - 10 }, x));
  const colors = ["#1f6feb", "#e5534b", "#2da44e"];
  series.forEach((sr, i) => {
    if (!sr.points.length) return;
    const d = sr.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, fill: "none", stroke: colors[i % colors.length], "stroke-width": 2, class: "series" }));
    for (const p of sr.points) svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: colors[i % colors.length] }));
    svg.append(s("text", { x: width - pad.r - 120, y: 14 + 12 * i, fill: colors[i % colors.length] }, sr.name));
  });
  return svg;
}

export function barChart(title, values, labels, { width = 420, height = 180 } = {}) {
  const pad = { l: 10, r: 10, t: 22, b: 20 };
  const svg = s("svg", { width, height, class: "chart", role: "img", "aria-label": title, "data-chart": title });
  svg.append(s("text", { x: pad.l, y: 14 }, title));
  const max = Math.max(...values, 1e-9), w = (width - pad.l - pad.r) / Math.max(1, values.length);
  values.forEach((v, i) => {
    const bh = (v / max) * (height - pad.t - pad.b);
    svg.append(s("rect", { x: pad.l + i * w + 1, y: height - pad.b - bh, width: Math.max(1, w - 2), height: bh, fill: "#1f6feb" }));
    if (labels) svg.append(s("text", { x: pad.l + i * w + w / 2 - 4, y: height - 6 }, labels[i]));
  });
  return svg;
}
