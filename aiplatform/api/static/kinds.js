// The kinds of model input and the requests each takes (GET /v1/kinds): the Inference page's
// uploads and pastes and the import form come from them, so a new kind needs no change here.

import { api } from "./api.js";

let kinds = null;

export function modelKinds() {
  kinds = kinds || api("GET", "/v1/kinds").then((body) => body.kinds).catch((err) => { kinds = null; throw err; });
  return kinds;
}

// The file endings any kind's model takes, for a file input's accept.
export function uploadAccept(list) {
  return [...new Set(list.flatMap((k) => k.upload))].join(",");
}

// The JSON body of a paste: a JSON object holding a key some kind reads is sent as it is; other
// text goes under the key of the kind that takes pasted text ({"text": ...}).
export function pastedBody(list, value) {
  const trimmed = value.trim();
  if (trimmed.startsWith("{")) {
    try {
      const body = JSON.parse(trimmed);
      const keys = list.flatMap((k) => k.json_keys);
      if (body && typeof body === "object" && !Array.isArray(body) && keys.some((key) => key in body)) return body;
    } catch { /* not JSON: pasted text */ }
  }
  const taker = list.find((k) => k.paste_key);
  if (!taker) throw new Error("No kind of model takes pasted text");
  return { [taker.paste_key]: value };
}
