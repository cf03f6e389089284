// DOM helpers: elements, the error and notice banners, formatting, polling.

const POLL_MS = 2000;
let pollTimer = null;

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;  // CSSOM: allowed by the UI's CSP
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children.flat()) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

export function showError(err) {
  const box = document.getElementById("error");
  document.getElementById("error-text").textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}
export function clearError() { document.getElementById("error").hidden = true; }
export function notify(message) {
  const box = document.getElementById("notice");
  box.textContent = message; box.hidden = false;
  setTimeout(() => { box.hidden = true; }, 4000);
}

// Run an action from a button: errors go to the banner, the button is disabled meanwhile.
export async function act(button, action) {
  clearError();
  if (button) button.disabled = true;
  try { return await action(); }
  catch (err) { showError(err); return undefined; }
  finally { if (button) button.disabled = false; }
}

export const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
export const fmtNum = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "–");
let currentPage = null;
// Each route draws into a fresh element: a page still loading when the user moves on finishes
// into a detached one instead of over the page they went to.
export function freshPage() {
  currentPage = h("div", { class: "page-body" });
  document.getElementById("page").replaceChildren(currentPage);
  return currentPage;
}
export const page = () => currentPage || freshPage();

export function progressBar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("span", { class: "row" }, h("span", { class: "bar" }, h("i", { style: `width:${pct.toFixed(0)}%` })), label || "");
}


export function poll(fn) { stopPolling(); pollTimer = setInterval(fn, POLL_MS); }
export function stopPolling() { if (pollTimer) clearInterval(pollTimer); pollTimer = null; }

// Cursor paging, newest first: `load(cursor)` shows the page after `cursor` (null: the newest) and
// returns the next page's cursor (null on the last). "Older" follows it, "Newest" goes back to the
// top; `refresh()` reloads the page shown (polling keeps the reader where they are), `reset()` the newest.
export function cursorPager(id, load) {
  const stack = [null];
  let next = null;
  const newest = h("button", { id: `${id}-newest` }, "Newest");
  const older = h("button", { id: `${id}-older` }, "Older");
  const where = h("span", { class: "muted", id: `${id}-page` });
  const refresh = async () => {
    next = await load(stack[stack.length - 1]);
    older.disabled = !next;
    newest.disabled = stack.length === 1;
    where.textContent = stack.length > 1 ? `page ${stack.length}` : "";
  };
  newest.addEventListener("click", () => act(null, () => reset()));
  older.addEventListener("click", () => act(null, async () => { if (next) { stack.push(next); await refresh(); } }));
  const reset = async () => { stack.length = 1; await refresh(); };
  return { element: h("div", { class: "row pager" }, newest, older, where), refresh, reset };
}
