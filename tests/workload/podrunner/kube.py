"""A thin JSON client over the kubernetes package's ApiClient, and a list+watch informer.

Objects stay plain dicts (as the API sends them): the runner reads many fields of pods and
EndpointSlices, and dicts are what the renderer and the tests use too.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("podrunner")

Obj = dict[str, Any]


class Kube:
    def __init__(self, api_client):
        self.api = api_client

    def _send(self, method: str, path: str, query: dict | None, body: Any, content_type: str, timeout: float):
        method, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()) or None,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"],
        )
        return self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)

    def request(self, method: str, path: str, *, body: Any = None, query: dict | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Obj | None:
        """The decoded JSON answer; None for 404 on GET/DELETE; ApiException otherwise."""
        resp = self._send(method, path, query, body, content_type, timeout)
        data = resp.read()
        if resp.status == 404 and method in ("GET", "DELETE"):
            return None
        if not 200 <= resp.status < 300:
            raise ApiException(status=resp.status, reason=resp.reason, body=data.decode(errors="replace"))
        return json.loads(data) if data else None

    def get(self, path: str, **query) -> Obj | None:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body=body, content_type="application/strategic-merge-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj | None:
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, resource_version: str, query: dict, timeout: int = 240) -> Iterator[tuple[str, Obj]]:
        params = dict(query, watch="true", resourceVersion=resource_version, allowWatchBookmarks="true",
                      timeoutSeconds=str(timeout))
        resp = self._send("GET", path, params, None, "application/json", timeout + 30)
        if resp.status != 200:
            raise ApiException(status=resp.status, reason=resp.reason, body=resp.read().decode(errors="replace"))
        raw = resp.response
        try:
            for line in iter_resp_lines(raw):
                if line:
                    event = json.loads(line)
                    yield event["type"], event["object"]
        finally:
            raw.release_conn()


def ns_path(kind_path: str, namespace: str | None, name: str | None = None) -> str:
    """`/api/v1` + `pods` + namespace + name -> the REST path."""
    base, _, plural = kind_path.rpartition("/")
    path = base + (f"/namespaces/{quote(namespace)}" if namespace else "") + "/" + plural
    return path + (f"/{quote(name)}" if name else "")


def key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Informer:
    """Keeps a cache of one resource type up to date (list, then watch; relist on errors) and
    calls `on_change(kind, obj)` for every add/update/delete, in its own thread."""

    def __init__(self, kube: Kube, path: str, on_change: Callable[[str, Obj], None] | None = None,
                 query: dict | None = None, name: str = ""):
        self.kube, self.path, self.query = kube, path, dict(query or {})
        self.on_change = on_change or (lambda kind, obj: None)
        self.cache: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=f"informer-{name or path}", daemon=True)

    def start(self) -> "Informer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())

    def get(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return self.cache.get(f"{namespace}/{name}")

    def _notify(self, kind: str, obj: Obj) -> None:
        try:
            self.on_change(kind, obj)
        except Exception:  # noqa: BLE001 - a consumer's bug must not stop the informer
            log.exception("informer %s: handler failed", self.path)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                listed = self.kube.request("GET", self.path, query=self.query)
                fresh = {key(o): o for o in listed.get("items", [])}
                with self.lock:
                    gone = [o for k, o in self.cache.items() if k not in fresh]
                    self.cache = fresh
                for obj in gone:
                    self._notify("DELETED", obj)
                for obj in fresh.values():
                    self._notify("MODIFIED", obj)
                self.synced.set()
                rv = listed["metadata"]["resourceVersion"]
                while not self.stopped.is_set():
                    for kind, obj in self.kube.watch(self.path, rv, self.query):
                        if self.stopped.is_set():
                            return
                        if kind == "ERROR":
                            raise ApiException(status=obj.get("code", 500), reason=obj.get("message", ""))
                        rv = obj["metadata"]["resourceVersion"]
                        if kind == "BOOKMARK":
                            continue
                        with self.lock:
                            if kind == "DELETED":
                                self.cache.pop(key(obj), None)
                            else:
                                self.cache[key(obj)] = obj
                        self._notify(kind, obj)
            except Exception as exc:  # noqa: BLE001 - relist after any error (410 Gone, connection reset)
                if self.stopped.is_set():
                    return
                self.errors += 1
                if not (isinstance(exc, ApiException) and exc.status == 410):
                    log.debug("informer %s: %s; relisting", self.path, exc)
                time.sleep(1)
