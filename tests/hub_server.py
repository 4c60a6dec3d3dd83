"""A small Hugging Face Hub look-alike on 127.0.0.1, enough for huggingface_hub 2.4 to push and pull.

No Hub is reachable from the tests and no installable server accepts uploads, so this speaks the
few routes huggingface_hub uses (create_repo, upload_folder, snapshot_download, create_branch).
Repos live in a folder: blobs by git object id, and per repo a JSON file of branches and commits,
each commit a full snapshot {path: blob id} with its own sha, so any old revision can be served.

Behaviours the client relies on, as read from huggingface_hub's source:
- /api/repos/create answers 409 *with* {"url"} for an existing repo (create_repo(exist_ok=True)).
- preupload answers uploadMode "regular" for every file: contents then travel base64-encoded
  inside the NDJSON commit, and neither LFS nor Xet is involved.
- /resolve answers carry X-Repo-Commit and ETag (the git blob id); errors carry X-Error-Code
  (RepoNotFound, RevisionNotFound, EntryNotFound), which the client turns into typed errors.
- a token other than the configured one gets 401 "Invalid credentials in Authorization header";
  private repos look absent (404 RepoNotFound) without the right token.

Fault injection: `cut_downloads_after = n` serves only the first n bytes of any file and then
drops the connection (resumed Range requests get nothing more), like a network failing mid-file.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
INITIAL_FILES = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}


def git_blob_id(data: bytes) -> str:
    """The id git (and the Hub) gives a file's contents; also what the client compares for no-ops."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class ErrorResponse(Exception):
    """An HTTP error answer: status, message, and the X-Error-Code the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class FakeHub:
    """The server and its repos. Use as a context manager, or start() / stop()."""

    def __init__(self, root: Path, token: str | None = None):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token = token or "hf_fake_" + secrets.token_hex(12)
        self.cut_downloads_after: int | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: later requests get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- storage -----------------------------------------------------------------------------
    def _repo_file(self, repo_id: str) -> Path:
        return self.root / "repos" / repo_id / "repo.json"

    def load_repo(self, repo_id: str) -> dict | None:
        path = self._repo_file(repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def _save_repo(self, repo_id: str, repo: dict) -> None:
        path = self._repo_file(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(repo))

    def _put_blob(self, data: bytes) -> str:
        oid = git_blob_id(data)
        (self.root / "blobs" / oid).write_bytes(data)
        return oid

    def read_blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def _new_commit(self, repo: dict, parent: str | None, files: dict, message: str) -> str:
        sha = hashlib.sha1(json.dumps([parent, files, message, time.time_ns()]).encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "files": files, "message": message}
        return sha

    def create_repo(self, repo_id: str, private: bool = False) -> bool:
        """Create a repo with one commit holding .gitattributes, as the Hub does; False if it exists."""
        with self._lock:
            if self.load_repo(repo_id) is not None:
                return False
            repo = {"private": private, "branches": {}, "commits": {}}
            files = {path: self._put_blob(data) for path, data in INITIAL_FILES.items()}
            repo["branches"]["main"] = self._new_commit(repo, None, files, "initial commit")
            self._save_repo(repo_id, repo)
            return True

    def resolve(self, repo: dict, revision: str) -> str:
        """Branch name, full sha or unique sha prefix (7+) -> commit sha."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in repo["commits"] if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise ErrorResponse(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, repo_id: str, branch: str, lines: list[dict]) -> str:
        with self._lock:
            repo = self.load_repo(repo_id)
            if branch not in repo["branches"]:
                raise ErrorResponse(404, f"Branch {branch} does not exist", "RevisionNotFound")
            parent = repo["branches"][branch]
            files = dict(repo["commits"][parent]["files"])
            message = ""
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    message = value.get("summary", "")
                elif key == "file" and value.get("encoding") == "base64":
                    files[value["path"]] = self._put_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: o for p, o in files.items() if not p.startswith(prefix)}
                else:
                    raise ErrorResponse(400, f"this fake Hub cannot store a {key!r} commit line")
            sha = self._new_commit(repo, parent, files, message)
            repo["branches"][branch] = sha
            self._save_repo(repo_id, repo)
            return sha


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    # HTTP/1.0: one request per connection, so stop() leaves no kept-alive connection serving.
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
        data = body if body is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _authorized(self) -> bool:
        """True for the configured token, False for none; any other token is refused with 401."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return False
        if auth != f"Bearer {self.hub.token}":
            raise ErrorResponse(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_id: str, write: bool = False) -> dict:
        authorized = self._authorized()
        if write and not authorized:
            raise ErrorResponse(401, "You must be authenticated to write to a repo")
        repo = self.hub.load_repo(repo_id)
        if repo is None or (repo["private"] and not authorized):
            raise ErrorResponse(404, "Repository not found", "RepoNotFound")
        return repo

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, url.path))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        # Split before unquoting: a revision may arrive as refs%2Fpr%2F1, one segment.
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        try:
            if self.command in ("GET", "HEAD") and len(parts) >= 6 and parts[0] == "spaces" \
                    and parts[3] == "resolve":
                return self._resolve(f"spaces/{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]))
            if self.command in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if parts[:1] == ["api"]:
                return self._api(parts[1:], query)
            raise ErrorResponse(404, f"no route for {self.command} {url.path}")
        except ErrorResponse as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._send(e.status, {"error": e.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # --- routes ------------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict) -> None:
        hub, method = self.hub, self.command
        if method == "GET" and parts == ["whoami-v2"]:
            if not self._authorized():
                raise ErrorResponse(401, "Invalid credentials in Authorization header")
            return self._send(200, {"type": "user", "name": USER, "orgs": [],
                                    "auth": {"accessToken": {"role": "write"}}})
        if method == "POST" and parts == ["validate-yaml"]:
            return self._validate_yaml(json.loads(self._body() or b"{}"))
        if method == "POST" and parts == ["repos", "create"]:
            payload = json.loads(self._body() or b"{}")
            if not self._authorized():
                raise ErrorResponse(401, "You must be authenticated to create a repo")
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            if payload.get("type") == "space":  # Spaces live beside models, under their own prefix
                repo_id = f"spaces/{repo_id}"
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            created = hub.create_repo(repo_id, private=private)
            return self._send(200 if created else 409, {"url": f"{hub.endpoint}/{repo_id}"}
                              | ({} if created else {"error": "You already created this model repo"}))
        if len(parts) < 3 or parts[0] not in ("models", "spaces"):
            raise ErrorResponse(404, f"no route for /api/{'/'.join(parts)}")
        repo_id, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        if parts[0] == "spaces":
            repo_id = f"spaces/{repo_id}"
        if method == "POST" and rest[:1] in (["preupload"], ["commit"]) and len(rest) == 2:
            body = self._body()
            repo = self._repo(repo_id, write=True)
            sha = hub.resolve(repo, rest[1])
            if rest[0] == "preupload":
                files = repo["commits"][sha]["files"]
                return self._send(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": files.get(f["path"])} for f in json.loads(body)["files"]]})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            new_sha = hub.commit(repo_id, rest[1], lines)
            return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{new_sha}",
                                    "commitOid": new_sha, "success": True})
        if method == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
            payload = json.loads(self._body() or b"{}")
            repo = self._repo(repo_id, write=True)
            with hub._lock:
                repo = hub.load_repo(repo_id)
                if rest[1] in repo["branches"]:
                    raise ErrorResponse(409, f"Branch {rest[1]} already exists")
                repo["branches"][rest[1]] = hub.resolve(repo, payload.get("startingPoint") or "main")
                hub._save_repo(repo_id, repo)
            return self._send(200, {})
        repo = self._repo(repo_id)
        if method == "GET" and (rest == [] or rest[:1] == ["revision"]):
            sha = hub.resolve(repo, rest[1] if len(rest) > 1 else "main")
            files = repo["commits"][sha]["files"]
            return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"],
                                    "siblings": [{"rfilename": p} for p in sorted(files)]})
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            sha = hub.resolve(repo, rest[1])
            prefix = "/".join(rest[2:]).strip("/")
            return self._send(200, self._tree(repo["commits"][sha]["files"], prefix,
                                              query.get("recursive", "").lower() == "true"))
        if method == "GET" and rest == ["refs"]:
            return self._send(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                                                 for b, s in repo["branches"].items()],
                                    "tags": [], "converts": []})
        raise ErrorResponse(404, f"no route for {method} /api/models/{repo_id}/{'/'.join(rest)}")

    def _tree(self, files: dict, prefix: str, recursive: bool) -> list[dict]:
        entries, folders = [], set()
        for path, oid in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) + 1:] if prefix else path
            if "/" in relative and not recursive:
                folders.add((prefix + "/" if prefix else "") + relative.split("/")[0])
                continue
            entries.append({"type": "file", "path": path, "oid": oid,
                            "size": len(self.hub.read_blob(oid))})
        return [{"type": "directory", "path": p, "oid": git_blob_id(p.encode()), "size": 0}
                for p in sorted(folders)] + entries

    def _validate_yaml(self, payload: dict) -> None:
        """Parse the README front matter like the Hub does; a YAML error is a 400 with 'errors'."""
        import yaml

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", payload.get("content", ""), re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": f"Invalid YAML: {e}"}]})
        if not isinstance(metadata, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a YAML mapping"}]})
        warnings = [] if metadata else [{"message": "empty or missing yaml metadata in repo card"}]
        return self._send(200, {"errors": [], "warnings": warnings})

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id)
        sha = self.hub.resolve(repo, revision)
        oid = repo["commits"][sha]["files"].get(path)
        if oid is None:
            raise ErrorResponse(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        data = self.hub.read_blob(oid)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{oid}"', "Accept-Ranges": "bytes"}
        status, start = 200, 0
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            status, data = 206, data[start:end]
        cut = self.hub.cut_downloads_after
        if self.command == "GET" and cut is not None:
            # Promise the whole body, send the part before the cut, then hang up.
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[:max(0, cut - start)])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, headers=headers, body=data)
