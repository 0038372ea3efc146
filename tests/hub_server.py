"""A tiny stand-in for the Hub's HTTP API, enough for `HfApi.create_repo` + `create_commit`.

It answers the endpoints huggingface_hub 2.x calls (read from its source): ``POST
/api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/{type}s/{repo}/preupload/{rev}``
(every file "regular", so no LFS/Xet transfer) and ``POST /api/{type}s/{repo}/commit/{rev}``
(NDJSON, base64 file contents); for downloads ``GET /api/models/{repo}/revision|tree/{rev}``
and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``. Anything else gets a 404 and is recorded, so a test fails
loudly if the client starts calling something new.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


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

            def do_HEAD(self) -> None:
                self._serve_file(head=True)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/api/agent-harnesses":
                    # huggingface_hub's best-effort user-agent lookup; a 404 is handled there.
                    return self._send(404, {"error": "not served by the fake hub"})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
                if m and m.group(1) in hub.repos:
                    hub.requests.append(("GET", self.path, dict(self.headers)))
                    files = hub.repos[m.group(1)]["files"]
                    sha = hub.repo_sha(m.group(1))
                    if m.group(2) == "revision":
                        siblings = [{"rfilename": name} for name in sorted(files)]
                        return self._send(200, {"id": m.group(1), "sha": sha, "siblings": siblings})
                    tree = [
                        {"type": "file", "path": name, "size": len(data), "oid": _blob_id(data)}
                        for name, data in sorted(files.items())
                    ]
                    return self._send(200, tree)
                self._serve_file(head=False)

            def _serve_file(self, head: bool) -> None:
                hub.requests.append(("HEAD" if head else "GET", self.path, dict(self.headers)))
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                files = hub.repos.get(m.group(1), {}).get("files", {}) if m else {}
                if not m or m.group(3) not in files:
                    hub.unexpected.append(f"{'HEAD' if head else 'GET'} {self.path}")
                    return self._send(404, {"error": "not found"})
                data = files[m.group(3)]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{_blob_id(data)}"')
                self.send_header("X-Repo-Commit", hub.repo_sha(m.group(1)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def repo_sha(self, repo_id: str) -> str:
        """A commit id that changes with the files (40 hex digits, like git)."""
        digest = hashlib.sha1()
        for name, data in sorted(self.repos[repo_id]["files"].items()):
            digest.update(name.encode() + b"\0" + data)
        return digest.hexdigest()

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
