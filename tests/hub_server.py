"""A small stand-in for the Hugging Face Hub, served on loopback for the hub tests.

It speaks the part of the Hub's HTTP API that the real ``huggingface_hub`` client (2.4) uses to
create a dataset repository, commit files, tag commits, list files and download them:

=====================================================  =========================================
``POST   /api/repos/create``                           create a repo (409 if it exists)
``GET    /api/datasets/{repo}[/revision/{rev}]``       repo info; ``sha`` is the resolved commit
``GET    /api/datasets/{repo}/tree/{rev}[/{path}]``    file listing (``recursive=true`` supported)
``POST   /api/datasets/{repo}/preupload/{rev}``        upload mode: always ``"regular"`` (inline)
``POST   /api/validate-yaml``                          README metadata check (accepts everything)
``POST   /api/datasets/{repo}/commit/{rev}``           ndjson commit: file / deletedFile / deletedFolder
``POST   /api/datasets/{repo}/tag/{rev}``              create a tag (409 if it exists)
``DELETE /api/datasets/{repo}/tag/{tag}``              delete a tag
``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``     file metadata and content
``GET    /blobs/{sha256}`` (second port, "the CDN")    content of large files, with Range support
=====================================================  =========================================

Like the real Hub, every response about a file carries ``X-Repo-Commit``; small files are served
directly with a git-sha1 ``ETag``; ``*.h5`` files are treated as LFS files: ``resolve`` answers with
a 302 redirect to a second origin (the "CDN", another port) and the ``X-Linked-Etag`` (sha256) and
``X-Linked-Size`` headers, and the CDN honours ``Range`` requests (206 + ``Content-Range``), which
is how the client resumes an interrupted transfer. Errors carry the ``X-Error-Code`` header the
client turns into ``RepositoryNotFoundError``, ``RevisionNotFoundError`` or ``EntryNotFoundError``.

Content lives in memory with real (sha1) commit ids, branches and tags. Tests can inject faults in
the transfer of a file's content (:meth:`HubServer.add_fault`), make API requests fail
(:meth:`HubServer.fail_requests`), change a stored file behind the repository's back
(:meth:`HubServer.tamper`) and read the request log (:attr:`HubServer.requests`).
:class:`SilentServer` accepts connections and never answers (a Hub that hangs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".h5",)
"""Files served the way the Hub serves LFS files: redirect to the CDN, sha256 etag."""

INITIAL_GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
FAULT_KINDS = ("drop", "corrupt", "error")


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file's content (what the Hub uses as the ETag of small files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def sha256_hex(content: bytes) -> str:
    """Hex sha256 of ``content`` (the ETag of LFS files)."""
    return hashlib.sha256(content).hexdigest()


@dataclass
class Commit:
    """One commit: the full file tree (path -> sha256 of the content) and its parent."""

    sha: str
    parent: str | None
    files: dict
    message: str


@dataclass
class Repo:
    """A dataset repository: its commits, branches and tags."""

    repo_id: str
    private: bool
    commits: dict = field(default_factory=dict)
    branches: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch, tag or full commit sha names, or None."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        return None


@dataclass
class Fault:
    """A transfer fault for the next GET of a file's content (``count`` times).

    kinds: ``drop`` sends the headers and half the body, then closes the connection; ``corrupt``
    sends the right length with one byte flipped; ``error`` answers 500.
    """

    file: str
    kind: str
    count: int = 1


@dataclass
class RequestFault:
    """An error answer (``status``) for the next ``count`` API requests matching method and path."""

    method: str
    path_pattern: str
    status: int
    count: int


@dataclass
class RequestRecord:
    """One request the server received."""

    method: str
    path: str
    range: str | None


class HubError(Exception):
    """An error answer: HTTP status, X-Error-Code and message."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit
        self.body = body or {}


class HubServer:
    """The Hub API on one loopback port plus a "CDN" port for LFS content, each in a thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. :attr:`url` is the endpoint
    to give to ``huggingface_hub`` (``endpoint=`` or ``HF_ENDPOINT``).
    """

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.faults: list[Fault] = []
        self.request_faults: list[RequestFault] = []
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._commit_counter = 0
        self._api = _Listener(self, _ApiHandler)
        self._cdn = _Listener(self, _CdnHandler)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The Hub endpoint, e.g. ``http://127.0.0.1:40123``."""
        return self._api.url

    @property
    def cdn_url(self) -> str:
        """Where LFS content is served from (another origin, like the Hub's CDN)."""
        return self._cdn.url

    def start(self) -> "HubServer":
        """Start both listeners in background threads."""
        self._api.start()
        self._cdn.start()
        return self

    def stop(self) -> None:
        """Stop both listeners and close every open connection (no request gets through after)."""
        self._api.stop()
        self._cdn.stop()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls
    def add_fault(self, file: str, kind: str, count: int = 1) -> None:
        """Make the next ``count`` content GETs of repo path ``file`` fail with ``kind``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        with self._lock:
            self.faults.append(Fault(file, kind, count))

    def fail_requests(self, method: str, path_pattern: str, count: int = 1,
                      status: int = 500) -> None:
        """Answer HTTP ``status`` to the next ``count`` API requests whose method is ``method`` and
        whose path matches the regular expression ``path_pattern`` (``re.search``)."""
        with self._lock:
            self.request_faults.append(RequestFault(method, path_pattern, status, count))

    def take_request_fault(self, method: str, path: str) -> int | None:
        """Consume a pending request fault matching ``method`` and ``path``; its status or None."""
        with self._lock:
            for fault in self.request_faults:
                if (fault.count > 0 and fault.method == method
                        and re.search(fault.path_pattern, path)):
                    fault.count -= 1
                    return fault.status
        return None

    def tamper(self, repo_id: str, path: str, content: bytes, branch: str = "main") -> None:
        """Replace a file's stored content at the head of ``branch`` without a new commit, as if
        the storage were damaged: the repo's manifest no longer matches the file."""
        with self._lock:
            repo = self.repos[repo_id]
            commit = repo.commits[repo.branches[branch]]
            if path not in commit.files:
                raise KeyError(f"{path} is not in {repo_id}@{branch}")
            commit.files[path] = self._store_blob(content)

    def file_content(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The content of ``path`` at ``revision`` (for assertions)."""
        with self._lock:
            repo = self.repos[repo_id]
            return self.blobs[repo.commits[repo.resolve(revision)].files[path]]

    def content_gets(self, file: str) -> list[RequestRecord]:
        """The GET requests that fetched the content of repo path ``file``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and _names_file(r.path, file)]

    # ------------------------------------------------------------------ repository model
    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """Create a repo with an initial commit holding ``.gitattributes`` (as the Hub does)."""
        with self._lock:
            if repo_id in self.repos:
                # the Hub's 409 answer still carries the repo url, which the client reads
                raise HubError(409, None, f"You already created this dataset repo: {repo_id}",
                               body={"url": f"{self.url}/datasets/{repo_id}"})
            repo = Repo(repo_id, private)
            self.repos[repo_id] = repo
            files = {".gitattributes": self._store_blob(INITIAL_GITATTRIBUTES)}
            repo.branches["main"] = self._add_commit(repo, None, files, "initial commit")
            return repo

    def repo(self, repo_id: str) -> Repo:
        """The repo ``repo_id`` or a RepoNotFound error."""
        with self._lock:
            if repo_id not in self.repos:
                raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return self.repos[repo_id]

    def commit_at(self, repo: Repo, revision: str) -> Commit:
        """The commit a revision names, or a RevisionNotFound error."""
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[sha]

    def apply_commit(self, repo: Repo, branch: str, header: dict, operations: list) -> str:
        """Apply ndjson commit operations to ``branch``; return the new commit sha."""
        with self._lock:
            if branch not in repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch} (not a branch)")
            head = repo.branches[branch]
            parent = header.get("parentCommit")
            if parent is not None and parent != head:
                raise HubError(412, None, f"parent commit {parent} is not the head of {branch} ({head})")
            files = dict(repo.commits[head].files)
            for key, value in operations:
                self._apply_operation(files, key, value)
            sha = self._add_commit(repo, head, files, header.get("summary", ""))
            repo.branches[branch] = sha
            return sha

    def _apply_operation(self, files: dict, key: str, value: dict) -> None:
        path = value.get("path", "")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise HubError(400, None, f"invalid path in repo: {path!r}")
        if key == "file":
            files[path] = self._store_blob(base64.b64decode(value["content"]))
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            for name in [name for name in files if name.startswith(prefix)]:
                del files[name]
        else:
            raise HubError(400, None, f"this test server does not support commit operation {key!r}")

    def _store_blob(self, content: bytes) -> str:
        digest = sha256_hex(content)
        self.blobs[digest] = content
        return digest

    def _add_commit(self, repo: Repo, parent: str | None, files: dict, message: str) -> str:
        self._commit_counter += 1
        record = json.dumps([parent, sorted(files.items()), message, self._commit_counter])
        sha = hashlib.sha1(record.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, parent, files, message)
        return sha

    def take_fault(self, file: str) -> str | None:
        """Consume one pending fault for ``file``; return its kind (or None)."""
        with self._lock:
            for fault in self.faults:
                if fault.file == file and fault.count > 0:
                    fault.count -= 1
                    return fault.kind
        return None

    def record(self, method: str, path: str, range_header: str | None) -> None:
        """Append a request to :attr:`requests`."""
        with self._lock:
            self.requests.append(RequestRecord(method, path, range_header))


def _names_file(request_path: str, file: str) -> bool:
    """True when a logged request path fetches repo file ``file`` (directly or from the CDN)."""
    return request_path.endswith("/" + file) or request_path.endswith("?file=" + file)


class _Listener:
    """One ThreadingHTTPServer on 127.0.0.1 with an OS-assigned port, tracking its connections."""

    def __init__(self, hub: HubServer, handler):
        self.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.hub = hub
        self.server.open_connections = set()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.stopped = False

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()
        for connection in list(self.server.open_connections):
            _close_quietly(connection)
        self.thread.join(timeout=5)


def _close_quietly(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


class _BaseHandler(BaseHTTPRequestHandler):
    """Shared plumbing: keep-alive HTTP/1.1, JSON answers, error answers, request logging."""

    protocol_version = "HTTP/1.1"

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def setup(self):
        super().setup()
        self.server.open_connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.open_connections.discard(self.connection)

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_answer(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        self.send_json({"error": error.message, **error.body}, error.status, headers)

    def send_content(self, content: bytes, headers: dict, file: str) -> None:
        """Send file content, honouring ``Range: bytes=N-`` and any fault injected for ``file``."""
        fault = self.hub.take_fault(file) if self.command == "GET" else None
        if fault == "error":
            self.send_error_answer(HubError(500, None, f"injected server error for {file}"))
            return
        start = _range_start(self.headers.get("Range"), len(content))
        status = 200 if start == 0 else 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(content) - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        body = content[start:]
        if fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if fault == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(0.05)  # let the client read what was sent before the connection dies
            self.close_connection = True
            _close_quietly(self.connection)
            return
        self.wfile.write(body)

    def handle_safely(self, route) -> None:
        split = urlsplit(self.path)
        self.hub.record(self.command, unquote(split.path) + ("?" + unquote(split.query) if split.query else ""),
                        self.headers.get("Range"))
        try:
            status = self.hub.take_request_fault(self.command, unquote(split.path))
            if status is not None:
                self.read_body()
                raise HubError(status, None, f"injected HTTP {status} for {self.command} {split.path}")
            route(split.path, parse_qs(split.query))
        except HubError as error:
            self.send_error_answer(error)


def _range_start(range_header: str | None, size: int) -> int:
    if not range_header:
        return 0
    match = re.fullmatch(r"bytes=(\d+)-", range_header.strip())
    if not match or int(match.group(1)) > size:
        raise HubError(416, None, f"unsupported range {range_header!r}")
    return int(match.group(1))


_API_REPO = re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>[a-z-]+)(?:/(?P<rest>.*))?)?$")
_RESOLVE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _ApiHandler(_BaseHandler):
    """The Hub API port."""

    def do_GET(self):
        self.handle_safely(self.route_get)

    def do_HEAD(self):
        self.handle_safely(self.route_get)

    def do_POST(self):
        self.handle_safely(self.route_post)

    def do_DELETE(self):
        self.handle_safely(self.route_delete)

    # ------------------------------------------------------------------ GET / HEAD
    def route_get(self, path: str, query: dict) -> None:
        if match := _RESOLVE.match(path):
            self.resolve_file(match["repo"], unquote(match["rev"]), unquote(match["path"]))
            return
        match = _API_REPO.match(path)
        if match is None:
            raise HubError(404, None, f"no such endpoint: GET {path}")
        repo = self.hub.repo(match["repo"])
        if match["action"] is None:
            self.repo_info(repo, "main")
        elif match["action"] == "revision":
            self.repo_info(repo, unquote(match["rest"]))
        elif match["action"] == "tree":
            revision, _, folder = match["rest"].partition("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            self.tree(repo, unquote(revision), unquote(folder), recursive)
        else:
            raise HubError(404, None, f"no such endpoint: GET {path}")

    def repo_info(self, repo: Repo, revision: str) -> None:
        commit = self.hub.commit_at(repo, revision)
        self.send_json({
            "_id": repo.repo_id, "id": repo.repo_id, "private": repo.private, "sha": commit.sha,
            "tags": [], "siblings": [{"rfilename": name} for name in sorted(commit.files)],
        })

    def tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> None:
        commit = self.hub.commit_at(repo, revision)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries = {}
        for name, digest in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            # a non-recursive listing shows the first folder level only
            folder_levels = range(1, len(parts)) if recursive else range(1, min(len(parts), 2))
            for level in folder_levels:
                folder_path = prefix + "/".join(parts[:level])
                entries[folder_path] = {"type": "directory", "path": folder_path, "size": 0,
                                        "oid": hashlib.sha1(folder_path.encode()).hexdigest()}
            if recursive or len(parts) == 1:
                entries[name] = self.file_entry(name, self.hub.blobs[digest])
        if prefix and not entries:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist at {revision}", commit.sha)
        self.send_json(list(entries.values()))

    @staticmethod
    def file_entry(name: str, content: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(content), "oid": git_blob_sha1(content)}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": sha256_hex(content), "size": len(content), "pointerSize": 134}
        return entry

    def resolve_file(self, repo_id: str, revision: str, name: str) -> None:
        repo = self.hub.repo(repo_id)
        commit = self.hub.commit_at(repo, revision)
        if name not in commit.files:
            raise HubError(404, "EntryNotFound", f"{name} does not exist at {revision}", commit.sha)
        content = self.hub.blobs[commit.files[name]]
        headers = {"X-Repo-Commit": commit.sha}
        if name.endswith(LFS_SUFFIXES):
            self.redirect_to_cdn(content, headers, name)
        else:
            headers["ETag"] = f'"{git_blob_sha1(content)}"'
            self.send_content(content, headers, name)

    def redirect_to_cdn(self, content: bytes, headers: dict, name: str) -> None:
        digest = sha256_hex(content)
        location = f"{self.hub.cdn_url}/blobs/{digest}?file={quote(name, safe='')}"
        self.send_response(302)
        for key, value in {**headers, "Location": location, "X-Linked-Etag": f'"{digest}"',
                           "X-Linked-Size": str(len(content)), "Content-Length": "0"}.items():
            self.send_header(key, value)
        self.end_headers()

    # ------------------------------------------------------------------ POST
    def route_post(self, path: str, query: dict) -> None:
        body = self.read_body()
        if path == "/api/repos/create":
            self.create_repo(json.loads(body))
            return
        if path == "/api/validate-yaml":
            self.send_json({"errors": [], "warnings": []})
            return
        match = _API_REPO.match(path)
        if match is None or match["rest"] is None:
            raise HubError(404, None, f"no such endpoint: POST {path}")
        repo = self.hub.repo(match["repo"])
        revision = unquote(match["rest"])
        if match["action"] == "preupload":
            self.preupload(repo, revision, json.loads(body))
        elif match["action"] == "commit":
            self.commit(repo, revision, body)
        elif match["action"] == "tag":
            self.create_tag(repo, revision, json.loads(body))
        else:
            raise HubError(404, None, f"no such endpoint: POST {path}")

    def create_repo(self, payload: dict) -> None:
        if payload.get("type") != "dataset":
            raise HubError(400, None, "this test server only hosts dataset repos")
        repo_id = f"{payload['organization']}/{payload['name']}"
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        self.send_json({"url": f"{self.hub.url}/datasets/{repo_id}", "name": repo_id})

    def preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        commit = self.hub.commit_at(repo, revision)
        answers = []
        for item in payload["files"]:
            digest = commit.files.get(item["path"])
            remote_oid = git_blob_sha1(self.hub.blobs[digest]) if digest else None
            answers.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                            "oid": remote_oid})
        self.send_json({"files": answers})

    def commit(self, repo: Repo, branch: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, None, "a commit payload starts with a header line")
        operations = [(line["key"], line["value"]) for line in lines[1:]]
        sha = self.hub.apply_commit(repo, branch, lines[0]["value"], operations)
        self.send_json({"success": True, "commitOid": sha, "hookOutput": "",
                        "commitUrl": f"{self.hub.url}/datasets/{repo.repo_id}/commit/{sha}"})

    def create_tag(self, repo: Repo, revision: str, payload: dict) -> None:
        commit = self.hub.commit_at(repo, revision)
        tag = payload["tag"]
        if tag in repo.tags or tag in repo.branches:
            raise HubError(409, None, f"Reference already exists: {tag}")
        repo.tags[tag] = commit.sha
        self.send_json({"success": True})

    # ------------------------------------------------------------------ DELETE
    def route_delete(self, path: str, query: dict) -> None:
        match = _API_REPO.match(path)
        if match is None or match["action"] != "tag" or match["rest"] is None:
            raise HubError(404, None, f"no such endpoint: DELETE {path}")
        repo = self.hub.repo(match["repo"])
        tag = unquote(match["rest"])
        if repo.tags.pop(tag, None) is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {tag}")
        self.send_json({"success": True})


class _CdnHandler(_BaseHandler):
    """The "CDN" port: ``GET /blobs/{sha256}?file=...`` with Range support."""

    def do_GET(self):
        self.handle_safely(self.serve_blob)

    def do_HEAD(self):
        self.handle_safely(self.serve_blob)

    def serve_blob(self, path: str, query: dict) -> None:
        digest = path.rsplit("/", 1)[-1]
        content = self.hub.blobs.get(digest)
        if not path.startswith("/blobs/") or content is None:
            raise HubError(404, None, f"no such blob: {path}")
        file = query.get("file", [""])[0]
        self.send_content(content, {"ETag": f'"{digest}"'}, file)


class SilentServer:
    """A TCP port on loopback that accepts connections and never answers a byte (a hung Hub).

    The kernel completes the handshakes, so a client's connect succeeds and then waits for an
    answer that never comes. Use as a context manager; :attr:`url` is the endpoint.
    """

    def __init__(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self._socket.close()
