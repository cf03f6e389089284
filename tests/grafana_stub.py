"""A small Grafana stand-in for the provisioning tests: the HTTP endpoints ``aip monitoring
provision`` calls, with Grafana's status codes (401 without the token, 404 for a missing object,
409 for a data source name taken by another uid), objects kept in memory, every request
recorded, and failures on demand. No real Grafana can be installed on these machines."""

from __future__ import annotations

import http.server
import json
import re
import threading
from typing import Any


class GrafanaStub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # statuses to answer the next requests with
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.requests if m != "GET"]

    def start(self, port: int) -> str:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stub.requests.append((self.command, self.path))
                if stub.fail_next:
                    return self._send(stub.fail_next.pop(0), {"message": "injected failure"})
                if self.headers.get("Authorization") != f"Bearer {stub.token}":
                    return self._send(401, {"message": "Unauthorized"})
                status, answer = stub.route(self.command, self.path.split("?")[0], body)
                self._send(status, answer)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def _send(self, status: int, answer: Any) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        not_found = (404, {"message": "Not found"})
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            uid = m.group(1)
            if method == "GET":
                return (200, self.datasources[uid]) if uid in self.datasources else not_found
            if method == "PUT" and uid in self.datasources:
                self.datasources[uid] = {**self.datasources[uid], **body}
                return 200, {"message": "Datasource updated"}
            return not_found
        if path == "/api/datasources" and method == "POST":
            if any(d["name"] == body["name"] and d["uid"] != body.get("uid") for d in self.datasources.values()):
                return 409, {"message": "data source with the same name already exists"}
            self.datasources[body["uid"]] = {"id": len(self.datasources) + 1, **body}
            return 200, {"message": "Datasource added"}
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            uid = m.group(1)
            if method == "GET":
                return (200, self.folders[uid]) if uid in self.folders else not_found
            if method == "PUT" and uid in self.folders:
                self.folders[uid].update(title=body["title"])
                return 200, self.folders[uid]
            return not_found
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
            return 200, self.folders[body["uid"]]
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            uid = m.group(1)
            return (200, self.dashboards[uid]) if uid in self.dashboards else not_found
        if path == "/api/dashboards/db" and method == "POST":
            dashboard = body["dashboard"]
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            version = self.dashboards.get(dashboard["uid"], {}).get("dashboard", {}).get("version", 0) + 1
            self.dashboards[dashboard["uid"]] = {
                "dashboard": {**dashboard, "id": 7, "version": version},
                "meta": {"folderUid": body["folderUid"]},
            }
            return 200, {"status": "success", "uid": dashboard["uid"], "version": version}
        if m := re.fullmatch(r"/api/v1/provisioning/alert-rules/([\w-]+)", path):
            uid = m.group(1)
            if method == "GET":
                return (200, self.rules[uid]) if uid in self.rules else not_found
            if method == "PUT" and uid in self.rules:
                self.rules[uid] = dict(body)
                return 200, self.rules[uid]
            return not_found
        if path == "/api/v1/provisioning/alert-rules" and method == "POST":
            if body["folderUID"] not in self.folders:
                return 400, {"message": "folder does not exist"}
            self.rules[body["uid"]] = dict(body)
            return 201, self.rules[body["uid"]]
        return 404, {"message": f"no route {method} {path}"}
