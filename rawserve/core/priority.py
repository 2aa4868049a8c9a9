"""RFC 9218 extensible priorities: the value every protocol maps its signals to."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_URGENCY = 3
MAX_INTEGER_DIGITS = 15


@dataclass(frozen=True, slots=True)
class Priority:
    """Urgency 0 (most urgent) .. 7, and whether the response may be interleaved."""

    urgency: int = DEFAULT_URGENCY
    incremental: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.urgency <= 7:
            raise ValueError(f"urgency must be 0..7, got {self.urgency}")


DEFAULT_PRIORITY = Priority()


def parse_priority_field(value: bytes | str, base: Priority = DEFAULT_PRIORITY) -> Priority:
    """Parse an RFC 9218 ``priority`` header (Structured Fields dictionary).

    Malformed or out-of-range members are ignored, never an error (RFC 9218
    section 4: unknown or invalid parameters MUST be ignored).
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return base
    urgency = base.urgency
    incremental = base.incremental
    for member in value.split(","):
        member = member.strip()
        if not member:
            continue
        key, sep, raw = member.partition("=")
        key = key.strip()
        raw = raw.strip().split(";", 1)[0].strip()
        if key == "u":
            # A Structured Fields integer has at most 15 digits (RFC 8941
            # section 3.3.1); the bound also keeps int() off a client's
            # thousand-digit numbers. str.isdigit alone would pass "²".
            if sep and 0 < len(raw) <= MAX_INTEGER_DIGITS and raw.isascii() and raw.isdigit():
                number = int(raw)
                if number <= 7:
                    urgency = number
        elif key == "i":
            if not sep:
                incremental = True
            elif raw == "?1":
                incremental = True
            elif raw == "?0":
                incremental = False
    return Priority(urgency, incremental)


def urgency_from_weight(weight: int) -> int:
    """Map an RFC 7540 weight (1..256) to an urgency, inverting h2o's mapping
    weight = floor(255.9 / 7 * (7 - u)) + 1."""
    weight = max(1, min(256, weight))
    for u in range(8):
        if weight >= int(255.9 / 7 * (7 - u)) + 1:
            return u
    return 7
