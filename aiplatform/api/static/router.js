// The address's fragment -> a page. Pages register with addPages (main.js does it for all of
// them) and may ask for the current page again with route(): nothing here imports a page.

import { freshPage, showError, stopPolling } from "./dom.js";

const pages = {};
let defaultName = "";
// Which navigation link a page lights up, when not its own name.
const NAV_OF = { task: "training", sweep: "sweeps", compare: "sweeps", result: "inference", "batch-job": "batch" };

// table: { name: async (arg) => render }, arg being the fragment after "name/"; an empty fragment
// is the page called fallback, and so is an unknown one.
export function addPages(table, fallback) {
  Object.assign(pages, table);
  if (fallback) defaultName = fallback;
}

export async function route() {
  stopPolling();
  freshPage();
  const [name, ...rest] = (location.hash.replace(/^#/, "") || defaultName).split("/");
  for (const link of document.querySelectorAll("nav a[data-page]")) link.classList.toggle("active", link.dataset.page === (NAV_OF[name] || name));
  try {
    await (pages[name] || pages[defaultName])(rest.map(decodeURIComponent).join("/"));
  } catch (err) { showError(err); }
}
