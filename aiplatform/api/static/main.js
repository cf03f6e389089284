// The platform's web UI: ES modules, no build step, no network beyond this origin.
// main.js gives the router (router.js) its pages and starts it.

import { clearError } from "./dom.js";
import { batchJobPage, batchPage } from "./page-batch.js";
import { ALERT_POLL_MS, alertsPage, refreshAlertBanner } from "./page-alerts.js";
import { datasetsPage } from "./page-datasets.js";
import { inferencePage, resultPage } from "./page-inference.js";
import { modelsPage } from "./page-models.js";
import { monitoringPage } from "./page-monitoring.js";
import { peoplePage, refreshIdentity } from "./page-people.js";
import { refreshProjects, watchProjectSwitch } from "./projects.js";
import { comparePage, sweepPage, sweepsPage } from "./page-sweeps.js";
import { taskPage, trainingPage } from "./page-training.js";
import { addPages, route } from "./router.js";

addPages({
  training: () => trainingPage(), task: taskPage, sweeps: () => sweepsPage(), sweep: sweepPage, compare: comparePage,
  inference: () => inferencePage(), result: resultPage, models: modelsPage, datasets: datasetsPage,
  alerts: () => alertsPage(), monitoring: monitoringPage, batch: batchPage, "batch-job": batchJobPage,
  people: peoplePage,
}, "training");

document.getElementById("error-close").addEventListener("click", clearError);
window.addEventListener("hashchange", () => { clearError(); route(); });
watchProjectSwitch();
route();
refreshIdentity();
refreshProjects();
refreshAlertBanner();
setInterval(refreshAlertBanner, ALERT_POLL_MS);
