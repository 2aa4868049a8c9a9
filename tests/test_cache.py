"""The result cache's pure half: content-addressed keys and the memory store.

Time is injected; nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawserve.inference.cache import (
    ENTRY_OVERHEAD,
    CachedResult,
    MemoryStore,
    is_key,
    result_key,
    result_path,
)


def key_of(inputs: dict[str, np.ndarray], **kw: object) -> str:
    args: dict[str, object] = {
        "model": "digits",
        "version": "1",
        "outputs": None,
        "representation": "predict",
    }
    args.update(kw)
    return result_key(
        str(args["model"]),
        str(args["version"]),
        inputs,
        args["outputs"],  # type: ignore[arg-type]
        str(args["representation"]),
    )


BASE = {"x": np.arange(64, dtype=np.float32).reshape(1, 64)}


def test_the_key_is_stable_across_copies_and_memory_layouts() -> None:
    k = key_of(BASE)
    assert is_key(k)
    assert key_of({"x": BASE["x"].copy()}) == k
    # A non-contiguous view of equal values is the same content.
    wide = np.zeros((1, 128), dtype=np.float32)
    wide[0, ::2] = BASE["x"][0]
    assert key_of({"x": wide[:, ::2]}) == k
    # Input order in the mapping does not matter.
    two = {"a": np.ones(2, np.int64), "b": np.zeros(3, np.float32)}
    assert key_of(two) == key_of(dict(reversed(list(two.items()))))


@pytest.mark.parametrize(
    "change",
    [
        "one byte",
        "dtype",
        "shape",
        "input name",
        "model",
        "version",
        "outputs",
        "representation",
    ],
)
def test_the_key_changes_with_everything_that_decides_the_answer(change: str) -> None:
    x = BASE["x"]
    inputs = {"x": x}
    kw: dict[str, object] = {}
    if change == "one byte":
        y = x.copy()
        y.view(np.uint8)[0, 5] ^= 1
        inputs = {"x": y}
    elif change == "dtype":
        inputs = {"x": x.astype(np.float64)}
    elif change == "shape":
        inputs = {"x": x.reshape(8, 8)}
    elif change == "input name":
        inputs = {"y": x}
    elif change == "model":
        kw["model"] = "other"
    elif change == "version":
        kw["version"] = "2"
    elif change == "outputs":
        kw["outputs"] = ["probabilities"]
    elif change == "representation":
        kw["representation"] = "v2-json"
    assert key_of(inputs, **kw) != key_of(BASE)


def test_field_boundaries_cannot_be_shifted() -> None:
    # Without length prefixes "ab"+"c" and "a"+"bc" would hash alike.
    assert key_of(BASE, model="ab", version="c") != key_of(BASE, model="a", version="bc")


def test_bytes_tensors_are_keyed_by_their_content_not_their_pointers() -> None:
    a = np.array([b"cat", b"dog"], dtype=object)
    b = np.array([b"cat", b"dog"], dtype=object)
    c = np.array([b"cat", b"dof"], dtype=object)
    assert key_of({"t": a}) == key_of({"t": b})
    assert key_of({"t": a}) != key_of({"t": c})


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=511))
def test_flipping_any_bit_changes_the_key(data: bytes, bit: int) -> None:
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    a = np.frombuffer(data, dtype=np.uint8)
    b = np.frombuffer(bytes(flipped), dtype=np.uint8)
    assert key_of({"x": a}) != key_of({"x": b})


def test_only_hex_sha256_text_is_a_key() -> None:
    k = key_of(BASE)
    assert is_key(k) and result_path(k) == "/results/" + k
    for bad in ("", k[:-1], k + "0", k.upper(), "../" + k[3:], k[:-1] + "g", "x" * 64):
        assert not is_key(bad)


def test_a_cached_result_round_trips_through_its_encoding() -> None:
    r = CachedResult(b'{"prediction":2}', "application/json", "k" * 64)
    assert CachedResult.decode(r.key, r.encode()) == r
    binary = CachedResult(
        b'{"outputs":[]}\x00\x01binary',
        "application/octet-stream",
        "k" * 64,
        (("inference-header-content-length", "14"),),
    )
    assert CachedResult.decode(binary.key, binary.encode()) == binary
    assert r.etag == f'"{"k" * 64}"'
    assert CachedResult.decode("k", b"no separator") is None
    assert CachedResult.decode("k", "\u00e9".encode() + b"\x00body") is None


def result(key: str, size: int) -> CachedResult:
    return CachedResult(b"x" * size, "a/b", key)


def entry_size(size: int) -> int:
    return size + len("a/b") + ENTRY_OVERHEAD


def test_the_store_evicts_least_recently_used_entries_to_stay_within_its_bytes() -> None:
    store = MemoryStore(max_bytes=3 * entry_size(100), ttl_s=60)
    for k in ("a", "b", "c"):
        assert store.put(result(k, 100), now=0)
    assert store.bytes == 3 * entry_size(100)
    assert store.get("a", now=1) is not None  # a is now the most recent
    store.put(result("d", 100), now=2)
    assert store.get("b", now=3) is None  # b was the least recently used
    assert {k for k in "acd" if store.get(k, now=3)} == {"a", "c", "d"}
    assert store.evictions == 1
    assert store.bytes <= store.max_bytes


def test_a_result_bigger_than_the_store_is_not_stored_and_evicts_nothing() -> None:
    store = MemoryStore(max_bytes=entry_size(100), ttl_s=60)
    store.put(result("a", 100), now=0)
    assert not store.put(result("big", 101), now=0)
    assert store.get("a", now=0) is not None and store.evictions == 0


def test_entries_expire_after_the_ttl_and_give_back_their_bytes() -> None:
    store = MemoryStore(max_bytes=10_000, ttl_s=10)
    store.put(result("a", 100), now=100)
    assert store.ttl_left("a", now=104) == pytest.approx(6)
    assert store.get("a", now=109.9) is not None
    assert store.get("a", now=110) is None
    assert store.bytes == 0 and len(store) == 0 and store.expirations == 1
    assert store.ttl_left("a", now=110) == 0


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    store = MemoryStore(max_bytes=10_000, ttl_s=10)
    store.put(result("a", 100), now=0)
    store.put(result("a", 50), now=1)
    assert store.bytes == entry_size(50) and len(store) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryStore(max_bytes=-1, ttl_s=1)
    with pytest.raises(ValueError):
        MemoryStore(max_bytes=1, ttl_s=0)
