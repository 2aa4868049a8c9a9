"""HTTP/1.1 response head text: status lines with their reason phrases, and
the check that no field splits the head."""

from __future__ import annotations

from http import HTTPStatus

_GENERIC_PHRASES = {
    1: "Informational",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
}
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("ascii"))
    for code, phrase in _PHRASES.items()
}


def reason_phrase(status: int) -> str:
    """The reason phrase for ``status``; never empty (h2load and some clients
    reject an empty one)."""
    return _PHRASES.get(status) or _GENERIC_PHRASES.get(status // 100, "Unknown")


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status code {status}")
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status).encode("ascii"))
    return line


def check_lines(head: bytes, lines: int) -> None:
    # A CR or LF inside a name or value would split the head (response splitting).
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError("response header name or value contains CR or LF")
