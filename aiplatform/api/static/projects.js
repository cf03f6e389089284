// The header's project switcher: the projects the caller holds a role in (every one, for a
// platform admin; GET /v1/projects). Choosing one remembers it (api.js) and shows the page again
// in it: every request then carries X-AIP-Project.

import { api, chooseProject, currentProject } from "./api.js";
import { h } from "./dom.js";
import { route } from "./router.js";

export async function refreshProjects() {
  const select = document.getElementById("project");
  let projects;
  try { projects = (await api("GET", "/v1/projects")).projects.map((p) => p.name); } catch (_) { return; }
  const chosen = currentProject();
  if (chosen && !projects.includes(chosen)) chooseProject(null);  // deleted, renamed, or no longer ours
  const shown = currentProject() || (projects.includes("default") ? "default" : projects[0]);
  select.replaceChildren(...projects.map((name) => h("option", { value: name, selected: name === shown }, name)));
  select.value = shown || "";
  document.getElementById("project-switch").hidden = projects.length === 0;
}

export function watchProjectSwitch() {
  document.getElementById("project").addEventListener("change", (event) => {
    chooseProject(event.target.value);
    route();
  });
}
