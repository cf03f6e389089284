// A model's lineage as a graph: where each version came from (dataset, task, code, an imported
// file, a parent version for compressed ones) and where it is served (its aliases), drawn as SVG.

import { h, s } from "./dom.js";

const COLUMN = 190, ROW = 46, BOX_W = 160, BOX_H = 30;

// Nodes in columns by depth: origins (datasets, code, imports) | tasks | versions | their children.
export function lineageGraph(name, versions, loopRuns = []) {
  const nodes = new Map(), edges = [];
  const node = (id, column, label, kind, href) => {
    if (!nodes.has(id)) nodes.set(id, { id, column, label, kind, href });
    return id;
  };
  const byVersion = new Map(versions.map((v) => [v.version, v]));
  const depth = (v, seen = new Set()) => {
    const parent = Number((v.lineage || {}).parent);
    if (!parent || !byVersion.has(parent) || seen.has(v.version)) return 2;
    seen.add(v.version);
    return depth(byVersion.get(parent), seen) + 1;
  };
  for (const v of [...versions].sort((a, b) => a.version - b.version)) {
    const lineage = v.lineage || {};
    const me = node(`v${v.version}`, depth(v), `${name} v${v.version}${v.aliases.length ? ` (${v.aliases.join(", ")})` : ""}`, "version");
    const parent = Number(lineage.parent);
    if (parent && byVersion.has(parent)) { edges.push([`v${parent}`, me, lineage.compression || lineage.method || "derived"]); continue; }
    let origin = null;
    if (lineage.dataset) origin = node(`dataset:${lineage.dataset}`, 0, lineage.dataset, "dataset", `#datasets/${lineage.dataset.replace("@", "/")}`);
    if (lineage.imported) origin = node(`file:${lineage.imported.sha256}`, 0, `${lineage.imported.filename || "ONNX file"}`, "file");
    if (lineage.code_digest) edges.push([node(`code:${lineage.code_digest}`, 0, `code @ ${lineage.code_digest.slice(0, 12)}`, "code"), lineage.task_id ? `task:${lineage.task_id}` : me, "runs"]);
    if (lineage.task_id) {
      const task = node(`task:${lineage.task_id}`, 1, `task ${lineage.task_id.slice(0, 12)}`, "task", `#task/${lineage.task_id}`);
      if (origin) edges.push([origin, task, "trains on"]);
      edges.push([task, me, "registers"]);
    } else if (origin) edges.push([origin, me, lineage.imported ? "imported" : "from"]);
  }
  // A retraining loop's run: what started it (an alert, a schedule, a person) -> the task it made.
  for (const run of loopRuns) {
    const train = run.steps.find((st) => st.step === "train" && st.task_id);
    if (!train || !nodes.has(`task:${train.task_id}`)) continue;
    const t = run.trigger;
    const origin = node(`loop:${run.id}`, 0, t.alert_id ? `alert ${t.detail} (${t.alert_id})` : `${t.kind} (loop ${run.id})`, "loop");
    edges.push([origin, `task:${train.task_id}`, `loop ${run.id}: ${run.state}`]);
  }
  const rows = new Map();
  for (const n of nodes.values()) { n.row = rows.get(n.column) || 0; rows.set(n.column, n.row + 1); }
  const width = (Math.max(...[...nodes.values()].map((n) => n.column), 0) + 1) * COLUMN;
  const height = Math.max(...rows.values(), 1) * ROW + 10;
  const at = (n) => ({ x: 10 + n.column * COLUMN, y: 10 + n.row * ROW });
  const svg = s("svg", { id: "lineage-graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "group",  // it holds links: a group, not an image
    "aria-label": `Lineage of ${name}: ${[...nodes.values()].map((n) => n.label).join(", ")}` });
  for (const [from, to, label] of edges) {
    const a = at(nodes.get(from)), b = at(nodes.get(to));
    const [x1, y1, x2, y2] = [a.x + BOX_W, a.y + BOX_H / 2, b.x, b.y + BOX_H / 2];
    svg.append(s("path", { class: "lineage-edge", "data-edge": `${from}->${to}`, d: `M${x1},${y1} C${x1 + 20},${y1} ${x2 - 20},${y2} ${x2},${y2}` },
      s("title", {}, label)));
  }
  for (const n of nodes.values()) {
    const { x, y } = at(n);
    const box = s("g", { class: `lineage-node lineage-${n.kind}`, "data-node": n.id },
      s("rect", { x, y, width: BOX_W, height: BOX_H, rx: 5 }),
      s("text", { x: x + 8, y: y + 19 }, n.label.length > 22 ? `${n.label.slice(0, 21)}…` : n.label), s("title", {}, n.label));
    if (n.href) {
      const link = s("a", { href: n.href });
      link.append(box);
      svg.append(link);
    } else svg.append(box);
  }
  return h("div", { class: "lineage-wrap" }, svg);
}

// Each alias's moves, newest first, and who made each ("unknown" for moves recorded before that was kept).
export function aliasHistoryTable(histories) {
  const rows = histories.flatMap(({ alias, history }) => history.map((m) => ({ alias, ...m })))
    .sort((a, b) => b.at - a.at);
  if (!rows.length) return h("p", { class: "muted" }, "No alias has been set yet.");
  return h("table", { id: "alias-history" }, h("thead", {}, h("tr", {}, ["When", "Alias", "Moved", "By"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((m) => h("tr", { "data-alias": m.alias }, h("td", {}, new Date(m.at * 1000).toLocaleString()),
      h("td", {}, m.alias), h("td", {}, m.version === null ? `v${m.previous_version} → removed` : m.previous_version ? `v${m.previous_version} → v${m.version}` : `→ v${m.version}`),
      h("td", { class: "alias-by" }, m.by || "unknown")))));
}
