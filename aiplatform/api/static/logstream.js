// A task's log as it grows: server-sent events read through fetch (EventSource cannot send the
// API token), resumed after each `reconnect` from the lines already shown.

import { authHeaders } from "./api.js";

const ANSI = /\x1b\[[0-9;]*m/g;  // Ray colours its log prefixes for terminals; a page shows them plain

function parseEvent(block) {
  let name = "message"; const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}

// Streams into `pre` until the task ends or `stop()` is called; resolves with the final state, or
// rejects when streaming is not possible (the caller then polls the log instead).
export function streamLog(taskId, pre) {
  const controller = new AbortController();
  let lines = [];
  const show = () => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.join("\n").replace(ANSI, "");
    pre.dataset.lines = lines.length;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  const run = async () => {
    let after = 0;
    for (;;) {
      const response = await fetch(`/v1/tasks/${encodeURIComponent(taskId)}/logs/stream?after=${after}`,
        { headers: authHeaders(), signal: controller.signal });
      if (!response.ok || !response.body) throw new Error(`log stream: HTTP ${response.status}`);
      pre.dataset.streaming = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "", resumeFrom = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          if (event.name === "lines") { lines = lines.slice(0, event.data.from).concat(event.data.lines); after = lines.length; show(); }
          else if (event.name === "restart") { lines = []; after = 0; show(); }
          else if (event.name === "end") { pre.dataset.streaming = "ended"; return event.data.state; }
          else if (event.name === "reconnect") resumeFrom = event.data.after;
        }
      }
      if (resumeFrom === null) throw new Error("log stream closed");
      after = Math.min(after, resumeFrom);
    }
  };
  const done = run();
  return { done, stop: () => controller.abort() };
}
