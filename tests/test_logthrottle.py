"""rawserve.core.logthrottle: one record per kind per interval, the held-back
ones counted in the next, the table of kinds bounded."""

from __future__ import annotations

import logging

import pytest

from rawserve.core.logthrottle import LogThrottle

log = logging.getLogger("tests.logthrottle")


def _error(n: int = 0) -> Exception:
    try:
        if n == 0:
            raise KeyError("a")
        raise ValueError(n)
    except Exception as exc:
        return exc


def test_first_error_of_a_kind_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(log, interval_s=10.0)
    with caplog.at_level(logging.ERROR, log.name):
        assert throttle.exception("it broke", _error(), now=100.0)
    (record,) = caplog.records
    assert record.getMessage() == "it broke"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "_error" in caplog.text  # the traceback names the function that raised


def test_repeats_within_the_interval_are_counted_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(log, interval_s=10.0)
    with caplog.at_level(logging.ERROR, log.name):
        assert throttle.exception("it broke", _error(), now=100.0)
        logged = [throttle.exception("it broke", _error(), now=100.0 + i) for i in range(1, 10)]
        assert not any(logged)
        assert throttle.exception("it broke", _error(), now=110.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["it broke", "it broke (9 more like it not logged)"]


def test_kinds_are_throttled_apart_and_the_table_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(log, interval_s=10.0, max_kinds=2)
    with caplog.at_level(logging.ERROR, log.name):
        assert throttle.exception("key", _error(0), now=0.0)
        assert throttle.exception("value", _error(1), now=0.0)  # another line: another kind
        # Past max_kinds every new kind shares one entry.
        assert throttle.exception("other", TypeError("x"), now=0.0)
        assert not throttle.exception("other", OSError("y"), now=1.0)
    assert len(throttle._kinds) == 3
