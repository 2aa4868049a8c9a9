"""Value types of the app surface: URL, headers, query and form multi-dicts,
uploaded files. Shaped like starlette's so FastAPI code reads them unchanged.

Headers keep the raw ``(name, value)`` byte pairs the protocol produced and
decode on access: most handlers look at one or two headers, if any.
"""

from __future__ import annotations

import asyncio
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from tempfile import SpooledTemporaryFile
from typing import IO, Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Address(NamedTuple):
    host: str
    port: int


# -- URL ------------------------------------------------------------------------


class URL:
    """A request URL. Built from parts (as the server knows them) or parsed
    from a string; ``str(url)`` is the full URL."""

    __slots__ = ("_str", "fragment", "netloc", "path", "query", "scheme")

    def __init__(
        self,
        url: str = "",
        *,
        scheme: str | None = None,
        netloc: str | None = None,
        path: str | None = None,
        query: str | None = None,
        fragment: str = "",
    ) -> None:
        if path is not None:
            self.scheme = scheme or "http"
            self.netloc = netloc or ""
            self.path = path
            self.query = query or ""
            self.fragment = fragment
            self._str: str | None = None
            return
        rest = url
        sch, sep, after = rest.partition("://")
        if sep:
            self.scheme = sch.lower()
            rest = after
            slash = len(rest)
            for ch in "/?#":
                i = rest.find(ch)
                if i != -1 and i < slash:
                    slash = i
            self.netloc, rest = rest[:slash], rest[slash:]
        else:
            self.scheme = scheme or ""
            self.netloc = netloc or ""
        rest, _, self.fragment = rest.partition("#")
        self.path, _, self.query = rest.partition("?")
        self._str = url

    @property
    def hostname(self) -> str | None:
        host = self.netloc.rpartition("@")[2]
        if host.startswith("["):  # IPv6 literal
            end = host.find("]")
            return host[1:end] if end != -1 else host[1:]
        host = host.partition(":")[0]
        return host.lower() or None

    @property
    def port(self) -> int | None:
        host = self.netloc.rpartition("@")[2]
        if host.startswith("["):
            host = host[host.find("]") + 1 :]
        _, sep, port = host.rpartition(":")
        # Ports have at most 5 digits; a client's Host header can hold anything.
        if sep and port.isascii() and port.isdigit() and len(port) <= 5:
            return int(port)
        return None

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")

    @property
    def components(self) -> tuple[str, str, str, str, str]:
        return (self.scheme, self.netloc, self.path, self.query, self.fragment)

    def replace(self, **parts: Any) -> URL:
        """A copy with ``scheme``, ``netloc``, ``path``, ``query``, ``fragment``,
        ``hostname`` or ``port`` replaced."""
        scheme = parts.pop("scheme", self.scheme)
        netloc = parts.pop("netloc", self.netloc)
        if "hostname" in parts or "port" in parts:
            hostname = parts.pop("hostname", self.hostname) or ""
            port = parts.pop("port", self.port)
            if ":" in hostname:
                hostname = f"[{hostname}]"
            netloc = hostname if port is None else f"{hostname}:{port}"
        path = parts.pop("path", self.path)
        query = parts.pop("query", self.query)
        fragment = parts.pop("fragment", self.fragment)
        if parts:
            raise TypeError(f"unknown URL part(s): {', '.join(sorted(parts))}")
        return URL(scheme=scheme, netloc=netloc, path=path, query=query, fragment=fragment)

    def include_query_params(self, **params: Any) -> URL:
        qp = MultiDict(parse_qsl(self.query, keep_blank_values=True))
        for k, v in params.items():
            qp[k] = str(v)
        return self.replace(query=urlencode(qp.multi_items()))

    def __str__(self) -> str:
        if self._str is None:
            s = f"{self.scheme}://{self.netloc}{self.path}" if self.scheme else self.path
            if self.query:
                s += "?" + self.query
            if self.fragment:
                s += "#" + self.fragment
            self._str = s
        return self._str

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, URL | str):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


# -- multi-dicts ----------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class ImmutableMultiDict(Mapping[K, V]):
    """A mapping where a key may repeat; ``[]``/``get`` give the last value
    (like starlette), ``getlist`` all of them in order."""

    __slots__ = ("_dict", "_list")

    def __init__(self, items: Iterable[tuple[K, V]] | Mapping[K, V] | None = None) -> None:
        if items is None:
            pairs: list[tuple[K, V]] = []
        elif isinstance(items, ImmutableMultiDict):
            pairs = list(items.multi_items())
        elif isinstance(items, Mapping):
            pairs = list(items.items())
        else:
            pairs = list(items)
        self._list = pairs
        self._dict: dict[K, V] = dict(pairs)

    def getlist(self, key: K) -> list[V]:
        return [v for k, v in self._list if k == key]

    def multi_items(self) -> list[tuple[K, V]]:
        return list(self._list)

    def keys(self) -> KeysView[K]:
        return self._dict.keys()

    def values(self) -> ValuesView[V]:
        return self._dict.values()

    def items(self) -> ItemsView[K, V]:
        return self._dict.items()

    def __getitem__(self, key: K) -> V:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[K]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImmutableMultiDict):
            return sorted(map(repr, self._list)) == sorted(map(repr, other._list))
        return NotImplemented

    def __hash__(self) -> int:  # pragma: no cover - mutable subclasses break it anyway
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


class MultiDict(ImmutableMultiDict[K, V]):
    __slots__ = ()

    def __setitem__(self, key: K, value: V) -> None:
        self._list = [(k, v) for k, v in self._list if k != key]
        self._list.append((key, value))
        self._dict[key] = value

    def __delitem__(self, key: K) -> None:
        self._list = [(k, v) for k, v in self._list if k != key]
        del self._dict[key]

    def append(self, key: K, value: V) -> None:
        self._list.append((key, value))
        self._dict[key] = value


class QueryParams(ImmutableMultiDict[str, str]):
    """Query string parameters; blank values are kept (``?a=&b`` gives
    ``a=""`` and ``b=""``)."""

    __slots__ = ()

    def __init__(
        self,
        query: str | bytes | Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(query, str):
            super().__init__(parse_qsl(query, keep_blank_values=True))
        else:
            super().__init__(query)

    def __str__(self) -> str:
        return urlencode(self._list)


# -- headers --------------------------------------------------------------------

RawHeaders = list[tuple[bytes, bytes]]


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-valued, read-only view over raw header pairs.
    Names are lowercase; values are decoded as latin-1 (RFC 9110 field values)."""

    __slots__ = ("_raw",)

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        *,
        raw: RawHeaders | None = None,
    ) -> None:
        if raw is not None:
            self._raw = raw
        elif headers is not None:
            self._raw = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            ]
        else:
            self._raw = []

    @property
    def raw(self) -> RawHeaders:
        return self._raw

    def get(self, key: str, default: Any = None) -> Any:
        k = key.lower().encode("latin-1")
        for name, value in self._raw:
            if name == k:
                return value.decode("latin-1")
        return default

    def getlist(self, key: str) -> list[str]:
        k = key.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self._raw if n == k]

    def keys(self) -> list[str]:  # type: ignore[override]
        return [n.decode("latin-1") for n, _ in self._raw]

    def values(self) -> list[str]:  # type: ignore[override]
        return [v.decode("latin-1") for _, v in self._raw]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._raw]

    def mutablecopy(self) -> MutableHeaders:
        return MutableHeaders(raw=list(self._raw))

    def __getitem__(self, key: str) -> str:
        k = key.lower().encode("latin-1")
        for name, value in self._raw:
            if name == k:
                return value.decode("latin-1")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        k = key.lower().encode("latin-1")
        return any(name == k for name, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._raw) == sorted(other._raw)
        if isinstance(other, Mapping):
            return sorted(self.items()) == sorted((k.lower(), v) for k, v in other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items()!r})"


class MutableHeaders(Headers):
    """Headers that a response builds. Mutations write through to the raw list
    the response sends."""

    __slots__ = ()

    def __setitem__(self, key: str, value: str) -> None:
        """Set ``key``, replacing every existing value."""
        k = key.lower().encode("latin-1")
        v = value.encode("latin-1")
        raw = self._raw
        # The first occurrence keeps its position; later duplicates go.
        found = -1
        for i, (name, _) in enumerate(raw):
            if name == k:
                found = i
                break
        if found == -1:
            raw.append((k, v))
            return
        raw[found] = (k, v)
        if any(name == k for name, _ in raw[found + 1 :]):
            raw[found + 1 :] = [item for item in raw[found + 1 :] if item[0] != k]

    def __delitem__(self, key: str) -> None:
        k = key.lower().encode("latin-1")
        self._raw[:] = [(n, v) for n, v in self._raw if n != k]

    def append(self, key: str, value: str) -> None:
        self._raw.append((key.lower().encode("latin-1"), value.encode("latin-1")))

    def setdefault(self, key: str, value: str) -> str:
        existing: str | None = self.get(key)
        if existing is None:
            self.append(key, value)
            return value
        return existing

    def update(self, other: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = other.items() if isinstance(other, Mapping) else other
        for k, v in items:
            self[k] = v

    def add_vary_header(self, vary: str) -> None:
        existing = self.get("vary")
        self["vary"] = f"{existing}, {vary}" if existing else vary


# -- state ----------------------------------------------------------------------


class State:
    """An attribute bag (``request.state.user = ...``)."""

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", dict(state) if state else {})

    def __setattr__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self._state[key]
        except KeyError:
            raise AttributeError(f"'State' object has no attribute '{key}'") from None

    def __delattr__(self, key: str) -> None:
        try:
            del self._state[key]
        except KeyError:
            raise AttributeError(key) from None

    def __contains__(self, key: str) -> bool:
        return key in self._state


# -- uploads ----------------------------------------------------------------------


class UploadFile:
    """An uploaded file. Small ones stay in memory; past ``max_size`` the
    spooled file rolls to disk and file operations move to a worker thread so
    the event loop never waits on the disk."""

    def __init__(
        self,
        file: IO[bytes] | None = None,
        *,
        size: int | None = None,
        filename: str | None = None,
        headers: Headers | None = None,
        max_size: int = 1024 * 1024,
    ) -> None:
        self.file: IO[bytes] = file if file is not None else SpooledTemporaryFile(max_size=max_size)
        self.size = size
        self.filename = filename
        self.headers = headers if headers is not None else Headers()

    @property
    def content_type(self) -> str | None:
        ct: str | None = self.headers.get("content-type")
        return ct

    @property
    def _in_memory(self) -> bool:
        rolled = getattr(self.file, "_rolled", True)
        return not rolled

    async def write(self, data: bytes) -> None:
        if self.size is not None:
            self.size += len(data)
        f = self.file
        if self._in_memory:
            max_size = getattr(f, "_max_size", 0)
            if not max_size or f.tell() + len(data) <= max_size:
                f.write(data)
                return
            # This write rolls the file over to disk (creating it and copying
            # what was in memory): off the loop, like every disk write.
        await asyncio.to_thread(f.write, data)

    async def read(self, size: int = -1) -> bytes:
        if self._in_memory:
            return self.file.read(size)
        return await asyncio.to_thread(self.file.read, size)

    async def seek(self, offset: int) -> None:
        if self._in_memory:
            self.file.seek(offset)
        else:
            await asyncio.to_thread(self.file.seek, offset)

    async def close(self) -> None:
        if self._in_memory:
            self.file.close()
        else:
            await asyncio.to_thread(self.file.close)

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, size={self.size!r}, "
            f"content_type={self.content_type!r})"
        )


class FormData(ImmutableMultiDict[str, "str | UploadFile"]):
    """Parsed form fields: strings, and UploadFile for file parts."""

    __slots__ = ()

    async def close(self) -> None:
        for _, value in self._list:
            if isinstance(value, UploadFile):
                await value.close()


__all__: Sequence[str] = (
    "URL",
    "Address",
    "FormData",
    "Headers",
    "ImmutableMultiDict",
    "MultiDict",
    "MutableHeaders",
    "QueryParams",
    "State",
    "UploadFile",
)
