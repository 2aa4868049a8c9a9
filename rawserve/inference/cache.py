"""The result cache, sans-IO: content-addressed keys, the cached value, and the
in-memory store (LRU bounded by bytes, with a TTL). Time is an argument.

The key is a sha256 over everything that decides an answer: the model's name
and version, each input's name, dtype, shape and raw bytes, the requested
outputs, and the representation the answer is encoded in (a /predict body and
a V2 body of the same inference are different resources). Equal inputs give
equal keys on every replica, so a shared backend (Redis, Memcached) serves
one replica's result to another.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
RESULTS_PREFIX = "/results/"

# Bytes of overhead counted per entry besides its body, so that a flood of
# tiny results cannot hold unbounded memory under a byte limit.
ENTRY_OVERHEAD = 256

_MAGIC = b"rawserve-result-v1"


def result_key(
    model: str,
    version: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None,
    representation: str,
) -> str:
    """The content address of one inference answer (64 lowercase hex digits)."""
    h = hashlib.sha256(_MAGIC)

    def field(data: bytes) -> None:
        # Length-prefixed, so that no two different field lists hash alike.
        h.update(struct.pack(">Q", len(data)))
        h.update(data)

    field(model.encode())
    field(version.encode())
    field(representation.encode())
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        field(name.encode())
        field(array.dtype.str.encode())
        field(struct.pack(f">{array.ndim}Q", *array.shape))
        if array.dtype.hasobject:
            # BYTES tensors hold Python objects: hash each element, never the
            # pointers that tobytes() would give.
            h.update(struct.pack(">Q", array.size))
            for element in array.flat:
                field(element if isinstance(element, bytes) else str(element).encode())
        else:
            h.update(struct.pack(">Q", array.nbytes))
            h.update(array.data)
    field(b"\x00".join(o.encode() for o in sorted(outputs)) if outputs else b"*")
    return h.hexdigest()


def is_key(text: str) -> bool:
    """Whether ``text`` is a well-formed key (never look up anything else)."""
    return KEY_PATTERN.fullmatch(text) is not None


def result_path(key: str) -> str:
    return RESULTS_PREFIX + key


@dataclass(frozen=True, slots=True)
class CachedResult:
    """An encoded answer: what ``GET /results/{key}`` serves. ``headers`` are
    the representation's own fields besides its type (V2's binary extension
    needs ``inference-header-content-length``)."""

    body: bytes
    content_type: str
    key: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def etag(self) -> str:
        return f'"{self.key}"'

    def encode(self) -> bytes:
        """One byte string for a remote backend: the content type and header
        lines, a NUL, then the body."""
        head = "\n".join([self.content_type, *(f"{k}:{v}" for k, v in self.headers)])
        return head.encode() + b"\x00" + self.body

    @classmethod
    def decode(cls, key: str, data: bytes) -> CachedResult | None:
        """The value ``encode`` made, or None if ``data`` is not one."""
        head, sep, body = data.partition(b"\x00")
        if not sep or len(head) > 4096:
            return None
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            return None
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return None
            headers.append((name, value))
        return cls(body, lines[0], key, tuple(headers))


@dataclass(slots=True)
class _Entry:
    result: CachedResult
    expires_at: float
    size: int


class MemoryStore:
    """LRU by bytes with a TTL. ``now`` comes from the caller's clock."""

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> CachedResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(key, entry)
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return entry.result

    def ttl_left(self, key: str, now: float) -> float:
        """Seconds ``key`` has left (0 when absent or expired)."""
        entry = self._entries.get(key)
        return max(0.0, entry.expires_at - now) if entry is not None else 0.0

    def put(self, result: CachedResult, now: float) -> bool:
        """Store ``result``; False when it alone is bigger than the whole store."""
        size = len(result.body) + len(result.content_type) + ENTRY_OVERHEAD
        size += sum(len(k) + len(v) for k, v in result.headers)
        if size > self.max_bytes:
            return False
        old = self._entries.get(result.key)
        if old is not None:
            self._remove(result.key, old)
        self._entries[result.key] = _Entry(result, now + self.ttl_s, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            key, entry = next(iter(self._entries.items()))
            self._remove(key, entry)
            self.evictions += 1
        return True

    def _remove(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes -= entry.size
