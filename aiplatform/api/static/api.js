// The API client: requests with the session's token, authenticated images and downloads.

import { act, h } from "./dom.js";

export class ApiError extends Error {
  constructor(status, code, message, body) { super(message); this.status = status; this.code = code; this.body = body; }
}

// Requests carry the platform's API token, kept for this browser session only (sessionStorage:
// gone when the tab closes, never visible to other origins). `aip up` prints a login URL with the
// token in its fragment (#token=...), which the browser never sends to a server: it is taken from
// there and removed from the address bar at once. Otherwise a 401 asks for the token and retries.
const TOKEN_KEY = "aip-api-token";
const tokenStore = window.sessionStorage;
let tokenDeclined = false;
(function takeTokenFromLoginUrl() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return;
  tokenStore.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search + "#training");
})();
// The project every request acts in (X-AIP-Project), chosen in the header's switcher and
// remembered in this browser (localStorage); none chosen: the key's project, else default.
const PROJECT_KEY = "aip-project";
export const currentProject = () => window.localStorage.getItem(PROJECT_KEY);
export function chooseProject(name) {
  if (name) window.localStorage.setItem(PROJECT_KEY, name);
  else window.localStorage.removeItem(PROJECT_KEY);
}
export const authHeaders = () => ({
  ...(tokenStore.getItem(TOKEN_KEY) ? { Authorization: `Bearer ${tokenStore.getItem(TOKEN_KEY)}` } : {}),
  ...(currentProject() ? { "X-AIP-Project": currentProject() } : {}),
});

export async function api(method, path, body, isForm, retried) {
  const sentToken = tokenStore.getItem(TOKEN_KEY);
  const options = { method, headers: authHeaders() };
  if (body !== undefined) {
    if (isForm) options.body = body;
    else { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  }
  let response;
  try { response = await fetch(path, options); }
  catch (err) { throw new ApiError(0, "unavailable", `The platform cannot be reached (${err.message})`); }
  if (response.status === 401 && !retried && tokenStore.getItem(TOKEN_KEY) && tokenStore.getItem(TOKEN_KEY) !== sentToken) {
    return api(method, path, body, isForm, true);  // another request asked for the token meanwhile
  }
  if (response.status === 401 && !retried && !tokenDeclined) {
    const token = prompt("This platform needs an API token (AIP_API_TOKEN):");
    if (token) { tokenStore.setItem(TOKEN_KEY, token.trim()); return api(method, path, body, isForm, true); }
    tokenDeclined = true;  // no prompt from every poll after a cancel; a reload asks again
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const message = (data && (data.message || data.error)) || text || response.statusText;
    throw new ApiError(response.status, data && data.error, `${message} (HTTP ${response.status})`, data);
  }
  return data;
}

// Images and downloads cannot send a header by themselves: with a token they are fetched first.
export function authedImage(url, attrs) {
  if (!tokenStore.getItem(TOKEN_KEY) && !currentProject()) return h("img", { ...attrs, src: url });
  const img = h("img", attrs);
  fetch(url, { headers: authHeaders() }).then((r) => r.blob()).then((b) => { img.src = URL.createObjectURL(b); });
  return img;
}

export function authedDownload(url, filename, label) {
  return h("a", { class: "button", href: url, download: filename, onclick: (e) => {
    if (!tokenStore.getItem(TOKEN_KEY) && !currentProject()) return;
    e.preventDefault();
    act(null, async () => {
      const response = await fetch(url, { headers: authHeaders() });
      if (!response.ok) throw new ApiError(response.status, null, `Download failed (HTTP ${response.status})`);
      const link = h("a", { href: URL.createObjectURL(await response.blob()), download: filename });
      link.click();
    });
  } }, label);
}
