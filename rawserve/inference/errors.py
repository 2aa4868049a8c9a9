"""What the inference engine answers instead of a result, each with the
HTTP status it becomes (``status_code``): an unknown model (404), a deadline
that passed in the queue (504), a server shutting down (503), a failed run
(500). A full queue is the scheduler's ``QueueFull`` (503)."""

from __future__ import annotations

from rawserve.core.errors import RawServeError

__all__ = ["DeadlineExceeded", "EngineStopped", "InferenceFailed", "ModelNotFound"]


class ModelNotFound(RawServeError):
    status_code = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"model '{name}'" + (f" version '{version}'" if version else "")
        super().__init__(f"{what} is not served here")
        self.name = name


class DeadlineExceeded(RawServeError):
    """The request's deadline passed while it was queued; it never ran."""

    status_code = 504

    def __init__(self, waited_s: float) -> None:
        super().__init__(
            f"the request waited {waited_s * 1000:.0f} ms in the queue and its deadline "
            "passed before a model worker was free; it was not run"
        )
        self.waited_s = waited_s


class EngineStopped(RawServeError):
    status_code = 503

    def __init__(self, reason: str = "the server is shutting down") -> None:
        super().__init__(reason)


class InferenceFailed(RawServeError):
    status_code = 500
