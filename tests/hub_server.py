"""A hub-shaped HTTP server on 127.0.0.1 for the model command's tests (no network): the two routes
huggingface_hub's model_info and file downloads use, with the headers the hub sends, HTTP Range for resumed
transfers, and switches to cut a transfer half-way or to serve bytes other than the listed ones."""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubTwin:
    """``repos``: {repo id: {path in repo: bytes}}; ``urls``: {url path: bytes} for files outside the hub.
    ``cut``: url paths whose next full transfer stops half-way (the connection closes); ``corrupt``: url paths
    served with a flipped byte; ``gated``: repo ids refused as the hub refuses a gated repository whose licence the
    caller has not accepted (403, X-Error-Code GatedRepo). ``requests`` logs (method, path, Range header)."""

    def __init__(self, repos: dict[str, dict[str, bytes]], urls: dict[str, bytes] | None = None):
        self.repos, self.urls = repos, urls or {}
        self.cut, self.corrupt, self.gated, self.requests = set(), set(), set(), []
        twin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                twin._serve(self, body=False)

            def do_GET(self):
                twin._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _info(self, repo: str) -> dict:
        siblings = []
        for name, data in self.repos[repo].items():
            sibling = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
            if name.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        return {"id": repo, "sha": COMMIT, "siblings": siblings}

    def _serve(self, handler, body: bool):
        path = handler.path.split("?", 1)[0]
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        if any(path.startswith((f"/api/models/{repo}/", f"/{repo}/")) for repo in self.gated):
            return self._send(handler, 403, b"Access to this model is restricted: accept its conditions", body,
                              {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted."})
        info = re.fullmatch(r"/api/models/(.+)/revision/[^/]+", path)
        if info and info.group(1) in self.repos:
            return self._send(handler, 200, json.dumps(self._info(info.group(1))).encode(), body,
                              {"Content-Type": "application/json"})
        data, headers = self._file(path)
        if data is None:
            return self._send(handler, 404, b"not found", body, {"X-Error-Code": "EntryNotFound"})
        if path in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
        if ranged:
            start = int(ranged.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        payload = data[start:]
        if body and path in self.cut and not ranged:
            self.cut.discard(path)
            handler.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the peer sees the body end early, as on a dropped link
            return
        self._send(handler, 206 if ranged else 200, payload, body, headers)

    def _file(self, path: str):
        if path in self.urls:
            return self.urls[path], {}
        match = re.fullmatch(r"/(.+?/.+?)/resolve/[^/]+/(.+)", path)
        if not match or match.group(2) not in self.repos.get(match.group(1), {}):
            return None, {}
        data = self.repos[match.group(1)][match.group(2)]
        etag = hashlib.sha256(data).hexdigest() if match.group(2).endswith(LFS_SUFFIXES) else git_blob_id(data)
        return data, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}

    @staticmethod
    def _send(handler, status: int, payload: bytes, body: bool, headers: dict):
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(payload)
