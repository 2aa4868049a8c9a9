"""URL, Headers/MutableHeaders, query and form multi-dicts, State, UploadFile."""

from __future__ import annotations

import asyncio
import io
import threading
from tempfile import SpooledTemporaryFile
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawserve.datastructures import (
    URL,
    FormData,
    Headers,
    ImmutableMultiDict,
    MultiDict,
    MutableHeaders,
    QueryParams,
    State,
    UploadFile,
)

# -- URL --------------------------------------------------------------------------


def test_url_parses_full_string() -> None:
    url = URL("https://user:pw@Example.COM:8443/a/b?x=1&y=2#frag")
    assert url.scheme == "https"
    assert url.netloc == "user:pw@Example.COM:8443"
    assert url.hostname == "example.com"
    assert url.port == 8443
    assert url.path == "/a/b"
    assert url.query == "x=1&y=2"
    assert url.fragment == "frag"
    assert url.is_secure
    assert str(url) == "https://user:pw@Example.COM:8443/a/b?x=1&y=2#frag"


def test_url_ipv6_and_no_port() -> None:
    url = URL("http://[::1]:8000/p")
    assert url.hostname == "::1"
    assert url.port == 8000
    url = URL("http://[fe80::1]/p")
    assert url.hostname == "fe80::1"
    assert url.port is None
    assert URL("http://host?q=1").path == ""
    assert URL("http://host?q=1").query == "q=1"


def test_url_relative() -> None:
    url = URL("/only/path?q")
    assert url.scheme == ""
    assert url.netloc == ""
    assert url.path == "/only/path"
    assert url.hostname is None
    assert str(url) == "/only/path?q"


def test_url_from_parts_and_replace() -> None:
    url = URL(scheme="http", netloc="h:1", path="/p", query="a=1")
    assert str(url) == "http://h:1/p?a=1"
    assert str(url.replace(path="/q", query="")) == "http://h:1/q"
    assert str(url.replace(port=2)) == "http://h:2/p?a=1"
    assert str(url.replace(hostname="::1", port=None)) == "http://[::1]/p?a=1"
    included = url.include_query_params(b=2, a=3)
    assert dict(QueryParams(included.query)) == {"a": "3", "b": "2"}
    assert url == "http://h:1/p?a=1"
    assert url == URL("http://h:1/p?a=1")
    assert hash(url) == hash(URL("http://h:1/p?a=1"))
    with pytest.raises(TypeError):
        url.replace(nonsense=1)


# -- headers ----------------------------------------------------------------------


def test_headers_from_raw_and_mapping() -> None:
    h = Headers(raw=[(b"content-type", b"text/plain"), (b"x-v", b"1"), (b"x-v", b"2")])
    assert h["Content-Type"] == "text/plain"
    assert h.getlist("X-V") == ["1", "2"]
    assert h.keys() == ["content-type", "x-v", "x-v"]
    assert h.values() == ["text/plain", "1", "2"]
    assert len(h) == 3
    assert list(h) == ["content-type", "x-v", "x-v"]
    assert 1 not in h  # type: ignore[comparison-overlap]
    h2 = Headers({"Content-Type": "text/plain", "X-V": "1"})
    assert h2.raw == [(b"content-type", b"text/plain"), (b"x-v", b"1")]
    assert h2 == {"content-type": "text/plain", "x-v": "1"}
    assert Headers(raw=list(h2.raw)) == h2
    assert Headers() == Headers(raw=[])


def test_headers_decode_latin1_not_crash() -> None:
    h = Headers(raw=[(b"x-name", "Jürgen".encode())])
    # Field values are opaque octets; latin-1 never fails and round-trips.
    assert h["x-name"].encode("latin-1").decode() == "Jürgen"


def test_mutable_headers_write_through() -> None:
    raw: list[tuple[bytes, bytes]] = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    h = MutableHeaders(raw=raw)
    h["A"] = "9"
    assert raw == [(b"a", b"9"), (b"b", b"2")]
    h["c"] = "new"
    assert raw[-1] == (b"c", b"new")
    h.append("set-cookie", "x=1")
    h.append("set-cookie", "y=2")
    assert h.getlist("set-cookie") == ["x=1", "y=2"]
    del h["set-cookie"]
    assert "set-cookie" not in h
    assert h.setdefault("b", "other") == "2"
    assert h.setdefault("d", "dd") == "dd"
    h.update({"b": "22", "e": "5"})
    assert h["b"] == "22" and h["e"] == "5"
    h.add_vary_header("Accept")
    h.add_vary_header("Origin")
    assert h["vary"] == "Accept, Origin"
    copy = Headers(raw=list(raw)).mutablecopy()
    copy["a"] = "changed"
    assert h["a"] == "9"


# -- multi-dicts ------------------------------------------------------------------


def test_immutable_multidict() -> None:
    d: ImmutableMultiDict[str, str] = ImmutableMultiDict([("a", "1"), ("b", "2"), ("a", "3")])
    assert d["a"] == "3"
    assert d.getlist("a") == ["1", "3"]
    assert d.getlist("z") == []
    assert list(d.keys()) == ["a", "b"]
    assert d.multi_items() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert d.get("z", "x") == "x"
    assert "a" in d and "z" not in d
    assert len(d) == 2
    assert d == ImmutableMultiDict([("a", "3"), ("a", "1"), ("b", "2")])
    assert ImmutableMultiDict({"k": "v"})["k"] == "v"
    assert ImmutableMultiDict(d).multi_items() == d.multi_items()


def test_multidict_mutation() -> None:
    d: MultiDict[str, str] = MultiDict([("a", "1"), ("a", "2")])
    d.append("a", "3")
    assert d.getlist("a") == ["1", "2", "3"]
    d["a"] = "only"
    assert d.getlist("a") == ["only"]
    del d["a"]
    assert "a" not in d


def test_query_params() -> None:
    qp = QueryParams("a=1&a=2&b=%20x&c")
    assert qp.getlist("a") == ["1", "2"]
    assert qp["b"] == " x"
    assert qp["c"] == ""
    assert str(qp) == "a=1&a=2&b=+x&c="
    assert QueryParams(b"x=1")["x"] == "1"
    assert QueryParams({"k": "v"})["k"] == "v"
    assert QueryParams([("k", "1"), ("k", "2")]).getlist("k") == ["1", "2"]
    assert len(QueryParams()) == 0


@given(st.lists(st.tuples(st.text(min_size=1), st.text())))
def test_query_params_round_trip(pairs: list[tuple[str, str]]) -> None:
    assert QueryParams(urlencode(pairs)).multi_items() == pairs


# -- state ------------------------------------------------------------------------


def test_state() -> None:
    s = State({"a": 1})
    assert s.a == 1
    s.b = 2
    assert "b" in s
    del s.b
    assert "b" not in s
    with pytest.raises(AttributeError):
        _ = s.b
    with pytest.raises(AttributeError):
        del s.b


# -- uploads ----------------------------------------------------------------------


async def test_upload_file_in_memory_stays_on_loop_thread() -> None:
    upload = UploadFile(filename="f.txt", size=0, max_size=1024)
    loop_thread = threading.get_ident()
    await upload.write(b"hello")
    await upload.seek(0)
    assert await upload.read() == b"hello"
    assert upload.size == 5
    assert upload._in_memory
    # No worker thread was needed: the default executor never started.
    loop = asyncio.get_running_loop()
    assert getattr(loop, "_default_executor", None) is None
    assert threading.get_ident() == loop_thread
    await upload.close()
    assert upload.file.closed


async def test_upload_file_rolled_to_disk_uses_threads() -> None:
    upload = UploadFile(filename="big", size=0, max_size=8)
    await upload.write(b"0123456789abcdef")
    assert not upload._in_memory
    await upload.seek(4)
    assert await upload.read(4) == b"4567"
    assert upload.size == 16
    await upload.close()
    assert upload.file.closed


async def test_upload_file_rollover_happens_off_the_loop() -> None:
    rollover_threads: list[int] = []

    class Recording(SpooledTemporaryFile[bytes]):
        def rollover(self) -> None:
            rollover_threads.append(threading.get_ident())
            super().rollover()

    upload = UploadFile(Recording(max_size=8), filename="x", size=0)
    await upload.write(b"1234")
    assert upload._in_memory
    await upload.write(b"56789abc")  # crosses max_size: creates the disk file
    assert not upload._in_memory
    assert rollover_threads and rollover_threads[0] != threading.get_ident()
    await upload.seek(0)
    assert await upload.read() == b"123456789abc"
    await upload.close()


async def test_upload_file_wrapping_existing_file() -> None:
    upload = UploadFile(
        io.BytesIO(b"abc"), filename="x", headers=Headers({"content-type": "text/csv"})
    )
    assert upload.content_type == "text/csv"
    # A plain file object is treated like a disk file (no _rolled attribute): still works.
    assert await upload.read() == b"abc"
    assert "text/csv" in repr(upload)


async def test_form_data_close_closes_files() -> None:
    f = UploadFile(filename="a")
    form = FormData([("name", "x"), ("file", f)])
    assert form["name"] == "x"
    assert form["file"] is f
    await form.close()
    assert f.file.closed
