"""A tiny stand-in for the Hub's HTTP API, enough for `HfApi.create_repo` + `create_commit`.

It answers the endpoints huggingface_hub 2.x calls (read from its source): ``POST
/api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/{type}s/{repo}/preupload/{rev}``
(every file "regular", so no LFS/Xet transfer) and ``POST /api/{type}s/{repo}/commit/{rev}``
(NDJSON, base64 file contents). Anything else gets a 404 and is recorded, so a test fails
loudly if the client starts calling something new.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "files": {path: bytes}}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.unexpected: list[str] = []
        self.commits: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path, dict(self.headers)))
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    p = json.loads(body)
                    repo_id = (
                        f"{p['organization']}/{p['name']}" if p.get("organization") else p["name"]
                    )
                    if repo_id in hub.repos:
                        # Like the Hub: the 409 body still carries the url (create_repo reads it).
                        return self._send(
                            409,
                            {
                                "error": "You already created this model repo",
                                "url": f"{hub.url}/{repo_id}",
                            },
                        )
                    hub.repos[repo_id] = {
                        "private": p.get("visibility") == "private",
                        "files": {},
                        "type": p.get("type"),
                    }
                    return self._send(200, {"url": f"{hub.url}/{repo_id}"})
                if path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                m = re.fullmatch(r"/api/(\w+)s/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if m and m.group(2) in hub.repos:
                    repo = hub.repos[m.group(2)]
                    if m.group(3) == "preupload":
                        files = json.loads(body)["files"]
                        return self._send(
                            200,
                            {
                                "files": [
                                    {
                                        "path": f["path"],
                                        "uploadMode": "regular",
                                        "shouldIgnore": False,
                                    }
                                    for f in files
                                ]
                            },
                        )
                    lines = [json.loads(line) for line in body.decode().splitlines() if line]
                    commit = {"header": lines[0]["value"], "files": []}
                    for item in lines[1:]:
                        if item["key"] != "file" or item["value"]["encoding"] != "base64":
                            return self._send(
                                400, {"error": f"unsupported operation {item['key']}"}
                            )
                        content = base64.b64decode(item["value"]["content"])
                        repo["files"][item["value"]["path"]] = content
                        commit["files"].append(item["value"]["path"])
                    hub.commits.append(commit)
                    oid = hashlib.sha1(body).hexdigest()
                    return self._send(
                        200, {"commitUrl": f"{hub.url}/{m.group(2)}/commit/{oid}", "commitOid": oid}
                    )
                hub.unexpected.append(f"POST {self.path}")
                return self._send(404, {"error": f"fake hub does not serve POST {path}"})

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path, dict(self.headers)))
                hub.unexpected.append(f"GET {self.path}")
                return self._send(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
