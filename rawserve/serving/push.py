"""Which links of a response can be pushed or hinted early.

A response's ``Link: </results/...>; rel=preload`` names what the client will
fetch next. When the client allows push those paths are pushed; otherwise
the links go out first in a ``103 Early Hints`` (RFC 8297). Only same-origin
paths are pushed: a link elsewhere is left to the client.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Preload:
    path: str  # "" for a link that is not a same-origin path
    value: bytes  # the link-value as sent, for a 103


def _split_links(value: bytes) -> list[bytes]:
    """Link values separated by commas outside ``<...>`` and quoted strings."""
    parts: list[bytes] = []
    start = 0
    in_target = in_quote = False
    for i, c in enumerate(value):
        if c == 0x3C and not in_quote:  # <
            in_target = True
        elif c == 0x3E and not in_quote:  # >
            in_target = False
        elif c == 0x22 and not in_target:  # "
            in_quote = not in_quote
        elif c == 0x2C and not in_target and not in_quote:  # ,
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def preload_links(headers: Headers, limit: int = 64) -> list[Preload]:
    """The ``rel=preload`` links of a response (at most ``limit``)."""
    found: list[Preload] = []
    for name, value in headers:
        if name != b"link":
            continue
        for link in _split_links(value):
            if not link.startswith(b"<") or b">" not in link:
                continue
            target, _, params = link[1:].partition(b">")
            rels: list[bytes] = []
            for param in params.split(b";"):
                key, _, val = param.strip().partition(b"=")
                if key.strip().lower() == b"rel":
                    rels = val.strip().strip(b'"').lower().split()
            if b"preload" not in rels:
                continue
            path = target.decode("latin-1")
            same_origin = path.startswith("/") and not path.startswith("//")
            found.append(Preload(path if same_origin else "", link))
            if len(found) >= limit:
                return found
    return found
