"""A small stand-in for the Hugging Face hub on 127.0.0.1, speaking the file API huggingface_hub uses.

Endpoints (what ``HfApi.model_info(files_metadata=True)`` and ``hf_hub_download`` call):
- ``GET /api/models/{owner}/{name}/revision/{rev}`` -> ``{"id", "sha", "siblings": [{"rfilename", "size", "blobId"}]}``
- ``HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`` -> the file, with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (huggingface_hub refuses a response without the first two).
Unknown repositories, revisions and files answer 404 with the ``X-Error-Code`` the hub sends
(RepoNotFound, RevisionNotFound, EntryNotFound), so error paths are real too.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    branches: dict[str, str] = field(default_factory=lambda: {"main": "a" * 40})

    def commit(self, revision: str) -> str | None:
        if revision in self.branches.values():
            return revision
        return self.branches.get(revision)


def repo_from_folder(folder: Path) -> FakeRepo:
    return FakeRepo({p.relative_to(folder).as_posix(): p.read_bytes()
                     for p in sorted(folder.rglob("*")) if p.is_file()})


class FakeHub:
    """``with FakeHub({"owner/name": FakeRepo(...)}) as hub: hub.url``; ``hub.requests`` logs what was asked."""

    def __init__(self, repos: dict[str, FakeRepo]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hub.handle(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                hub.handle(self, body=False)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routing ---------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append((request.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            self.model_info(request, "/".join(parts[2:4]), "/".join(parts[5:]), body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self.resolve(request, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        else:
            self.error(request, 404, "RepoNotFound", body)

    def model_info(self, request: BaseHTTPRequestHandler, repo_id: str, revision: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self.error(request, 404, "RepoNotFound", body)
        commit = repo.commit(revision)
        if commit is None:
            return self.error(request, 404, "RevisionNotFound", body)
        siblings = [{"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                    for name, data in repo.files.items()]
        payload = json.dumps({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                              "siblings": siblings}).encode()
        self.send(request, 200, payload, {"Content-Type": "application/json"}, body)

    def resolve(self, request: BaseHTTPRequestHandler, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self.error(request, 404, "RepoNotFound", body)
        commit = repo.commit(revision)
        if commit is None:
            return self.error(request, 404, "RevisionNotFound", body)
        data = repo.files.get(name)
        if data is None:
            return self.error(request, 404, "EntryNotFound", body, {"X-Repo-Commit": commit})
        headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": commit,
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        self.send(request, 200, data, headers, body)

    @staticmethod
    def error(request: BaseHTTPRequestHandler, status: int, code: str, body: bool,
              extra: dict[str, str] | None = None) -> None:
        payload = json.dumps({"error": code}).encode()
        FakeHub.send(request, status, payload, {"X-Error-Code": code, "Content-Type": "application/json",
                                                **(extra or {})}, body)

    @staticmethod
    def send(request: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str],
             body: bool) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if body:
            request.wfile.write(payload)
