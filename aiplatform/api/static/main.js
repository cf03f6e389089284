// The platform's web UI: ES modules, no build step, no network beyond this origin.
// main.js routes the address's fragment to a page.

import { clearError, freshPage, showError, stopPolling } from "./dom.js";
import { ALERT_POLL_MS, alertsPage, refreshAlertBanner } from "./page-alerts.js";
import { datasetsPage } from "./page-datasets.js";
import { inferencePage, resultPage } from "./page-inference.js";
import { modelsPage } from "./page-models.js";
import { monitoringPage } from "./page-monitoring.js";
import { comparePage, sweepPage, sweepsPage } from "./page-sweeps.js";
import { taskPage, trainingPage } from "./page-training.js";

export async function route() {
  stopPolling();
  freshPage();
  const [name, ...rest] = (location.hash.replace(/^#/, "") || "training").split("/");
  for (const link of document.querySelectorAll("nav a[data-page]")) link.classList.toggle("active", link.dataset.page === ({ task: "training", sweep: "sweeps", compare: "sweeps", result: "inference" }[name] || name));
  const arg = rest.map(decodeURIComponent).join("/");
  try {
    if (name === "task") await taskPage(arg);
    else if (name === "sweeps") await sweepsPage();
    else if (name === "sweep") await sweepPage(arg);
    else if (name === "compare") await comparePage(arg);
    else if (name === "inference") await inferencePage();
    else if (name === "result") await resultPage(arg);
    else if (name === "models") await modelsPage(arg);
    else if (name === "datasets") await datasetsPage(arg);
    else if (name === "alerts") await alertsPage();
    else if (name === "monitoring") await monitoringPage(arg);
    else await trainingPage();
  } catch (err) { showError(err); }
}

document.getElementById("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", () => { clearError(); route(); });
route();
refreshAlertBanner();
setInterval(refreshAlertBanner, ALERT_POLL_MS);
