"""Rate-limited logging of unexpected errors, clock passed in.

A bug a client can trigger must be logged with its traceback, and must not
let that client fill the log. ``LogThrottle`` logs the first error of each
kind, then at most one per ``interval_s``, and the next record it logs
counts the ones it held back. Sans-IO: the caller says what time it is.
"""

from __future__ import annotations

import logging

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most one record per kind per ``interval_s``. Kinds past
    ``max_kinds`` share one, so the table stays bounded whatever errors come."""

    __slots__ = ("_kinds", "_logger", "interval_s", "max_kinds")

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 10.0, max_kinds: int = 64
    ) -> None:
        self._logger = logger
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        # kind -> [time of the last record logged, records held back since]
        self._kinds: dict[str, list[float]] = {}

    def exception(self, message: str, exc: BaseException, now: float) -> bool:
        """Log ``message`` with ``exc``'s traceback unless its kind was logged
        less than ``interval_s`` ago. True if it was logged."""
        kind = _kind(exc)
        entry = self._kinds.get(kind)
        if entry is None:
            if len(self._kinds) >= self.max_kinds:
                kind = "(other)"
                entry = self._kinds.get(kind)
            if entry is None:
                self._kinds[kind] = [now, 0]
                self._logger.error(message, exc_info=exc)
                return True
        if now - entry[0] < self.interval_s:
            entry[1] += 1
            return False
        suppressed = int(entry[1])
        entry[0], entry[1] = now, 0
        if suppressed:
            message = f"{message} ({suppressed} more like it not logged)"
        self._logger.error(message, exc_info=exc)
        return True


def _kind(exc: BaseException) -> str:
    """The exception's type and the line that raised it."""
    tb = exc.__traceback__
    if tb is None:
        return type(exc).__qualname__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{type(exc).__qualname__} at {code.co_filename}:{tb.tb_lineno}"
