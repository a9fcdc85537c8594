"""A small list+watch cache: one LIST, then a WATCH from its resourceVersion, re-listing on expiry.

Each informer runs in its own thread, keeps the latest object per key and calls a handler for every
change (the handler must be quick: it only enqueues work).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger("twin.informer")

Handler = Callable[[str, dict], None]


def _key(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name')}"


class Informer:
    """Watches one resource through a list function that returns raw dicts (no model deserialisation)."""

    def __init__(self, name: str, list_fn: Callable[..., Any], handler: Handler, **list_kwargs: Any) -> None:
        self.name = name
        self.list_fn = list_fn
        self.handler = handler
        self.list_kwargs = list_kwargs
        self.cache: dict[str, dict] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> Informer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def items(self) -> list[dict]:
        with self._lock:
            return list(self.cache.values())

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self.cache.get(key)

    def _list(self) -> str:
        resp = self.list_fn(_preload_content=False, **self.list_kwargs)
        import json

        doc = json.loads(resp.data)
        fresh = {_key(o): o for o in doc.get("items", [])}
        with self._lock:
            gone = set(self.cache) - set(fresh)
            old = self.cache
            self.cache = fresh
        for k in gone:
            self.handler("DELETED", old[k])
        for obj in fresh.values():
            self.handler("SYNC", obj)
        self.synced.set()
        return doc["metadata"]["resourceVersion"]

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                w = watch.Watch()
                for ev in w.stream(self.list_fn, resource_version=rv, timeout_seconds=240,
                                   allow_watch_bookmarks=True, _request_timeout=300, **self.list_kwargs):
                    if self._stop.is_set():
                        w.stop()
                        return
                    obj = ev["raw_object"]
                    etype = ev["type"]
                    if etype == "ERROR":
                        rv = None
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype == "BOOKMARK":
                        continue
                    with self._lock:
                        if etype == "DELETED":
                            self.cache.pop(_key(obj), None)
                        else:
                            self.cache[_key(obj)] = obj
                    self.handler(etype, obj)
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                elif exc.status == 404:  # the resource's CRD is not installed (yet)
                    rv = None
                    self.synced.set()
                    time.sleep(1.0)
                else:
                    log.warning("%s: watch failed (%s); retrying", self.name, exc.status)
                    time.sleep(0.5)
            except (HTTPError, OSError, ValueError) as exc:
                log.warning("%s: watch interrupted (%s); retrying", self.name, exc)
                time.sleep(0.5)
                rv = None
