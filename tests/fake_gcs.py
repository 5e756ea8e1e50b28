"""gs://fake-bucket/... served from memory, so tests run work directories on an object store.

Two clients read and write GCS in a run, and both are pointed at one in-memory store here:
etils.epath (everything but checkpoint arrays; the `gs` backend is replaced by `FakeGcsBackend`)
and TensorStore, which Orbax uses for the arrays (through its `gcs` driver, which sends the GCS
JSON API to TENSORSTORE_GCS_HTTP_URL, here a local `FakeGcsServer`). Orbax's GCS code paths run
unchanged: in-place writes with commit_success.txt instead of renames, deletion by prefix.

The store keeps object-store semantics where a local disk would hide a bug: no directories (a
"directory" exists while an object lies under it, mkdir does nothing), no appends, and a rename
is a copy then a delete. Object generations and the `ifGenerationMatch` preconditions that
TensorStore's OCDBT manifests rely on are honoured.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from etils.epath import backend as backend_lib
from etils.epath import gpath, stat_utils

BUCKET = "fake-bucket"  # TensorStore checks bucket names: 3-63 characters.
ROOT = f"gs://{BUCKET}"


class ObjectStore:
    """Objects by "bucket/name": (bytes, generation); thread-safe."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, int]] = {}
        self.lock = threading.Lock()
        self._generation = 0

    def put(self, key: str, data: bytes, if_generation: int | None = None) -> int | None:
        """Stores `data`; the new generation, or None when the precondition fails (0 = absent)."""
        with self.lock:
            current = self.objects.get(key)
            if if_generation is not None and (current[1] if current else 0) != if_generation:
                return None
            self._generation += 1
            self.objects[key] = (data, self._generation)
            return self._generation

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self.lock:
            return self.objects.get(key)

    def keys(self, prefix: str = "") -> list[str]:
        with self.lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> bool:
        with self.lock:
            return self.objects.pop(key, None) is not None


# -- the GCS JSON API, as TensorStore's gcs driver uses it --------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: ObjectStore

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _metadata(bucket: str, name: str, data: bytes, generation: int) -> dict[str, str]:
        return {"kind": "storage#object", "bucket": bucket, "name": name,
                "size": str(len(data)), "generation": str(generation), "metageneration": "1"}

    def _request(self) -> tuple[list[str], dict[str, str]]:
        url = urllib.parse.urlsplit(self.path)
        return url.path.split("/"), dict(urllib.parse.parse_qsl(url.query))

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        # /storage/v1/b/<bucket>/o (list) or /storage/v1/b/<bucket>/o/<name> (read)
        parts, query = self._request()
        bucket = parts[4]
        if len(parts) == 6 or parts[6:] == [""]:
            prefix = query.get("prefix", "")
            start, end = query.get("startOffset", ""), query.get("endOffset")
            items = []
            for key in self.store.keys(f"{bucket}/{prefix}"):
                name = key[len(bucket) + 1:]
                if name >= start and (end is None or name < end):
                    items.append(self._metadata(bucket, name, *self.store.get(key)))
            return self._json({"kind": "storage#objects", "items": items})
        name = urllib.parse.unquote("/".join(parts[6:]))
        found = self.store.get(f"{bucket}/{name}")
        if found is None:
            return self._send(404)
        data, generation = found
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != generation:
            return self._send(412)
        if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == generation:
            return self._send(304, headers={"x-goog-generation": str(generation)})
        if query.get("alt") != "media":
            return self._json(self._metadata(bucket, name, data, generation))
        headers = {"x-goog-generation": str(generation),
                   "Content-Type": "application/octet-stream"}
        if "Range" not in self.headers:
            return self._send(200, data, headers)
        first, last = self.headers["Range"].removeprefix("bytes=").split("-")
        first, last = int(first), int(last) if last else len(data) - 1
        if first >= len(data) > 0:
            return self._send(416)
        body = data[first:last + 1]
        headers["Content-Range"] = f"bytes {first}-{first + len(body) - 1}/{len(data)}"
        return self._send(206, body, headers)

    def do_POST(self) -> None:  # noqa: N802
        # /upload/storage/v1/b/<bucket>/o?uploadType=media&name=<name>[&ifGenerationMatch=g]
        parts, query = self._request()
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        bucket, name = parts[5], query["name"]
        precondition = query.get("ifGenerationMatch")
        generation = self.store.put(f"{bucket}/{name}", data,
                                    None if precondition is None else int(precondition))
        if generation is None:
            return self._send(412)
        return self._json(self._metadata(bucket, name, data, generation))

    def do_DELETE(self) -> None:  # noqa: N802
        parts, query = self._request()
        key = f"{parts[4]}/{urllib.parse.unquote('/'.join(parts[6:]))}"
        found = self.store.get(key)
        if found is None:
            return self._send(404)
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != found[1]:
            return self._send(412)
        self.store.delete(key)
        return self._send(204)


class FakeGcsServer:
    """The GCS JSON API over `store` on a local port, in a background thread."""

    def __init__(self, store: ObjectStore):
        handler = type("Handler", (_Handler,), {"store": store})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the epath backend --------------------------------------------------------------------------

class _Upload(io.BytesIO):
    """A write handle: the object appears whole when the handle closes, as on GCS."""

    def __init__(self, store: ObjectStore, key: str):
        super().__init__()
        self._store, self._key = store, key

    def close(self) -> None:
        if not self.closed:
            self._store.put(self._key, self.getvalue())
        super().close()


class FakeGcsBackend(backend_lib.Backend):
    """epath's view of `store`: gs://<bucket>/<name> is object "<bucket>/<name>"."""

    def __init__(self, store: ObjectStore):
        self.store = store

    @staticmethod
    def _key(path: Any) -> str:
        path = os.fspath(path)
        if not path.startswith("gs://"):
            raise ValueError(f"not a gs:// path: {path}")
        return path.removeprefix("gs://").rstrip("/")

    def _under(self, path: Any) -> list[str]:
        prefix = self._key(path) + "/"
        return [k[len(prefix):] for k in self.store.keys(prefix)]

    def open(self, path: Any, mode: str) -> Any:
        key = self._key(path)
        if "a" in mode or "+" in mode:
            raise OSError(f"objects cannot be appended to or updated: {path} ({mode!r})")
        if "r" in mode:
            found = self.store.get(key)
            if found is None:
                raise FileNotFoundError(path)
            handle: io.BytesIO = io.BytesIO(found[0])
        else:
            handle = _Upload(self.store, key)
        return handle if "b" in mode else io.TextIOWrapper(handle, encoding="utf-8")

    def exists(self, path: Any) -> bool:
        return self.store.get(self._key(path)) is not None or self.isdir(path)

    def isdir(self, path: Any) -> bool:
        return bool(self._under(path))

    def listdir(self, path: Any) -> list[str]:
        return sorted({name.split("/", 1)[0] for name in self._under(path)})

    def glob(self, path: Any) -> list[str]:
        pattern = self._key(path)
        depth = pattern.count("/")
        matches = set()
        for key in self.store.keys():
            candidate = "/".join(key.split("/")[: depth + 1])
            if fnmatch.fnmatchcase(candidate, pattern):
                matches.add(f"gs://{candidate}")
        return sorted(matches)

    def walk(self, top: Any, *, top_down: bool = True, on_error: Any = None) -> Any:
        raise NotImplementedError("walk is not used by the code under test")

    def makedirs(self, path: Any, *, exist_ok: bool = False, mode: int | None = None) -> None:
        pass

    def mkdir(self, path: Any, *, exist_ok: bool = False, mode: int | None = None) -> None:
        pass

    def rmtree(self, path: Any) -> None:
        key = self._key(path)
        doomed = [k for k in self.store.keys(key) if k == key or k.startswith(key + "/")]
        if not doomed:
            raise FileNotFoundError(path)
        for k in doomed:
            self.store.delete(k)

    def remove(self, path: Any) -> None:
        if not self.store.delete(self._key(path)):
            raise FileNotFoundError(path)

    def _move(self, path: Any, dst: Any) -> None:
        source, target = self._key(path), self._key(dst)
        moved = [k for k in self.store.keys(source) if k == source or k.startswith(source + "/")]
        if not moved:
            raise FileNotFoundError(path)
        for key in moved:
            self.store.put(target + key[len(source):], self.store.get(key)[0])
            self.store.delete(key)

    def rename(self, path: Any, dst: Any) -> None:
        if self.exists(dst):
            raise FileExistsError(dst)
        self._move(path, dst)

    def replace(self, path: Any, dst: Any) -> None:
        if self.isdir(dst):
            raise IsADirectoryError(dst)
        self._move(path, dst)

    def copy(self, path: Any, dst: Any, overwrite: bool) -> None:
        if not overwrite and self.exists(dst):
            raise FileExistsError(dst)
        found = self.store.get(self._key(path))
        if found is None:
            raise FileNotFoundError(path)
        self.store.put(self._key(dst), found[0])

    def stat(self, path: Any) -> stat_utils.StatResult:
        found = self.store.get(self._key(path))
        if found is None and not self.isdir(path):
            raise FileNotFoundError(path)
        return stat_utils.StatResult(
            is_directory=found is None, length=len(found[0]) if found else 0, mtime=0,
            owner=None, group=None, mode=None,
        )


def install(monkeypatch: Any) -> tuple[ObjectStore, FakeGcsServer]:
    """Points epath's gs:// and TensorStore's gcs driver at one fresh in-memory store.

    Orbax asks google-cloud-storage whether a bucket has a hierarchical namespace before it
    deletes a step; the fake bucket has none. Close the returned server when done.
    """
    from orbax.checkpoint._src.path import gcs_utils

    store = ObjectStore()
    server = FakeGcsServer(store)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", server.url)
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake-token")
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", FakeGcsBackend(store))
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    return store, server
