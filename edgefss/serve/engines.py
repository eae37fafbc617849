"""Bundles opened once per process, and support sets encoded lazily per process.

Each bundle is opened once with Segmenter.load; every support set used with it gets its own
Segmenter over that same engine (one backend session per bundle, however many support sets), so
switching support sets never re-encodes and concurrent requests with different sets never mix.
Encoded sets are kept in a bounded LRU per bundle; a set deleted from the support folder by any
process stops being served here at the next request (its file is checked every time).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

from edgefss.errors import InputError
from edgefss.runtime import Segmenter
from edgefss.serve.store import SupportSet
from edgefss.serve.uploads import decode_image, decode_mask

_NO_LIMIT = 1 << 62  # stored uploads passed the limits when they were uploaded


def _field_of(message: str) -> str:
    """'class_names[1]: ...' -> 'classes[1]': the form field a Segmenter InputError is about."""
    head = message.split(":", 1)[0].strip()
    if head and " " not in head:
        return head.replace("class_names", "classes")
    # e.g. a TLG text table's "class name 'x' is not in the text table": about the names
    return "classes" if "class" in message.lower() else "images"


class BundleEngine:
    """One bundle: its name, a base Segmenter (the engine) and an LRU of encoded support sets."""

    def __init__(self, name: str, path: str, backend=None, threads=None, device=None, cache: int = 16):
        self.name, self.path = name, str(path)
        self._load_kw = {"backend": backend, "threads": threads, "device": device}
        self.base = Segmenter.load(path, **self._load_kw)
        self._share_failed = False
        self.cache_size = cache
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}
        self.encodes = 0  # support sets encoded by this process (a metric)

    def info(self) -> dict:
        m = self.base.manifest
        return {
            "name": self.name,
            "model": m.get("model"),
            "backend": m.get("backend"),
            "precision": m.get("precision"),
            "imgsz": self.base.cfg.imgsz,
            "ops_path": self.base.ops_path,
            "random_weights": bool(m.get("weights", {}).get("random_init", False)),
        }

    def _fresh(self) -> Segmenter:
        """A Segmenter without support set over the base's engine (no second backend session).

        Segmenter has no public "same engine, other support set" call yet; its constructor takes
        the parts Segmenter.load built. Should that signature change, each set falls back to its
        own Segmenter.load (correct, but one backend session per cached set) and says so once.
        """
        b = self.base
        if not self._share_failed:
            try:
                return Segmenter(b.backend, b.adapter, b.manifest, b.bundle_dir, ops_path=b.ops_path)
            except TypeError as exc:
                self._share_failed = True
                logging.getLogger("edgefss.serve").warning(
                    "bundle %s: cannot share one engine between support sets (%s); loading one per set",
                    self.name,
                    exc,
                )
        return Segmenter.load(self.path, **self._load_kw)

    def segmenter(self, sid: str, load: Callable[[], SupportSet]) -> Segmenter:
        """The Segmenter holding support set `sid` encoded; on first use in this process `load()`
        gives the set and it is encoded.

        Raises:
            InputError: the bundle refuses the set (e.g. a class a TLG text table does not know);
                its `field` attribute names the form field.
        """
        with self._lock:
            seg = self._cache.get(sid)
            if seg is not None:
                self._cache.move_to_end(sid)
                return seg
            key_lock = self._key_locks.setdefault(sid, threading.Lock())
        with key_lock:  # concurrent first requests for one set encode it once
            with self._lock:
                seg = self._cache.get(sid)
            if seg is None:
                seg = self._encode(load())
                with self._lock:
                    self._cache[sid] = seg
                    self.encodes += 1
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        with self._lock:
            self._key_locks.pop(sid, None)
        return seg

    def _encode(self, support: SupportSet) -> Segmenter:
        images = [decode_image(b, f"images[{i}]", _NO_LIMIT, _NO_LIMIT) for i, b in enumerate(support.images)]
        masks = [
            None if m is None else decode_mask(m, f"masks[{i}]", _NO_LIMIT, _NO_LIMIT)
            for i, m in enumerate(support.masks)
        ]
        seg = self._fresh()
        try:
            seg.set_support(
                images, list(support.classes), masks if any(m is not None for m in masks) else None
            )
        except InputError as exc:
            exc.field = _field_of(str(exc))
            raise
        return seg

    def forget(self, sid: str) -> None:
        with self._lock:
            self._cache.pop(sid, None)

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)
