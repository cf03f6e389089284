// The Alerts page and the banner every page shows.

import { api } from "./api.js";
import { fmtTime, h, page, poll, s, showError } from "./dom.js";

// Firing alerts show on every page (a banner and a count in the menu), refreshed on their own timer.
export const ALERT_POLL_MS = 5000;
export async function refreshAlertBanner() {
  let firing = [];
  try { ({ alerts: firing } = await api("GET", "/v1/alerts?state=firing&limit=50")); } catch (_) { return; }
  const banner = document.getElementById("alert-banner");
  const count = document.getElementById("alert-count");
  count.textContent = firing.length; count.hidden = !firing.length;
  banner.hidden = !firing.length;
  banner.replaceChildren(...firing.slice(0, 3).map((a) => h("div", { class: `alert-line severity-${a.severity}`, "data-alert-rule": a.rule },
    h("strong", {}, `${a.severity}: ${a.rule}`), ` — ${a.message} `, h("a", { href: "#alerts" }, "details"))),
    firing.length > 3 ? h("div", {}, `and ${firing.length - 3} more`) : "");
}

export async function alertsPage() {
  const root = page();
  const [{ alerts }, { rules }] = await Promise.all([api("GET", "/v1/alerts?limit=200"), api("GET", "/v1/alerts/rules")]);
  root.replaceChildren(h("h2", {}, "Alerts"),
    h("section", { class: "card" }, h("table", { id: "alert-table" },
      h("thead", {}, h("tr", {}, ["State", "Severity", "Rule", "Message", "Started", "Resolved"].map((t) => h("th", {}, t)))),
      h("tbody", {}, alerts.map((a) => h("tr", { "data-alert": a.id, "data-state": a.state, class: `severity-${a.severity}` },
        h("td", {}, a.state), h("td", {}, a.severity), h("td", {}, a.rule), h("td", {}, a.message),
        h("td", {}, fmtTime(a.started_at)), h("td", {}, fmtTime(a.resolved_at))))))),
    alerts.length ? "" : h("p", { class: "muted" }, "No alerts so far."),
    h("h3", {}, "Rules"),
    h("section", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Rule", "Kind", "Signal", "Condition", "Severity"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rules.map((r) => h("tr", {}, h("td", {}, r.name), h("td", {}, r.kind), h("td", {}, r.signal),
        h("td", {}, r.kind === "anomaly" ? `${r.sensitivity} MADs over ${r.window} values` :
          `${r.op} ${r.threshold}${r.kind === "trend" ? ` within ${r.horizon_s} s` : ""}`), h("td", {}, r.severity)))))));
  poll(() => alertsPage().catch(showError));
}
