"""Configuration: one frozen dataclass, units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rawserve.core.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """Every limit a client can run into. Each is enforced, each is a CLI flag
    (``--limit-<name with dashes>``)."""

    # HTTP/1.1 request line + header block; HTTP/2 and HTTP/3 header list size.
    max_header_bytes: int = 64 * KiB
    max_body_bytes: int = 64 * MiB
    # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (and HTTP/3 bidi stream credit).
    max_concurrent_streams: int = 100
    # HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE we advertise for request bodies.
    initial_window_bytes: int = 256 * KiB
    # HTTP/2 connection-level receive window.
    connection_window_bytes: int = 1 * MiB
    max_frame_bytes: int = 16 * KiB
    # Response bytes a stream may queue beyond what the peer's flow-control
    # window lets out; past it the handler waits.
    write_buffer_bytes: int = 64 * KiB
    # Request body bytes read ahead of the handler before reading pauses.
    read_buffer_bytes: int = 256 * KiB
    # HTTP/1.1 requests parsed ahead of the one being answered.
    max_pipelined_requests: int = 16
    # Headers must arrive completely within this time of connection start or
    # of the previous response (slowloris).
    header_timeout_s: float = 10 * SECONDS
    keep_alive_timeout_s: float = 5 * SECONDS
    # An HTTP/2 connection with no open stream is closed after this.
    idle_timeout_s: float = 60 * SECONDS
    # Time a handler has to produce a response; 0 disables.
    request_timeout_s: float = 0.0
    # Control frames (PING, SETTINGS, PRIORITY, RST_STREAM, empty DATA...) a
    # connection may send per second before it is closed with ENHANCE_YOUR_CALM.
    max_control_frames_per_s: int = 1000
    # Streams a peer may reset per second (CVE-2023-44487, rapid reset).
    max_resets_per_s: int = 200
    # A request body that stops arriving while the server waits for it (not
    # while reading is paused for a slow handler, nor before 100 Continue) is
    # cut after this long without a byte: 408 and close on HTTP/1.1,
    # RST_STREAM on HTTP/2. An HTTP/2 client that half-closed, its answer
    # waiting for window it can no longer give, is cut after as long. 0 disables.
    body_timeout_s: float = 30 * SECONDS
    # Request body bytes one connection may have received for requests not yet
    # complete (HTTP/2: many streams, each with a partial upload); the stream
    # that crosses it is reset (ENHANCE_YOUR_CALM).
    connection_body_bytes: int = 64 * MiB
    # Open connections. 0: the file descriptor limit (RLIMIT_NOFILE) less a
    # headroom for listeners, logs, models and threads (serving/server.py).
    # As it fills, connections making no progress are closed to make room.
    connections: int = 0
    # After its first second, a request head must average this rate, or the
    # connection is closed (slowloris sends a byte every few seconds).
    min_header_rate_bytes_per_s: int = 100
    # Server push (HTTP/2): promises per connection, and pushed streams open at
    # once (also within the client's SETTINGS_MAX_CONCURRENT_STREAMS).
    max_pushes_per_connection: int = 1000
    max_concurrent_pushes: int = 100


@dataclass(frozen=True)
class InferenceSettings:
    """The built-in inference app: which models, and how they are scheduled."""

    # "NAME=PATH" entries; empty: the bundled digits model.
    models: tuple[str, ...] = ()
    # A model repository (KServe's /mnt/models): every ONNX model in it, named
    # by its file or directory (inference/app/application.py); None: none.
    model_dir: str | None = None
    # Worker threads per model, each running one batch at a time.
    model_workers: int = 1
    # How much lower the worker threads' OS priority is than the event loop's
    # and the urgent lane's (a nice increment, Linux; 0: the same). On a
    # shared core the loop and urgent runs go first (inference/threads.py).
    worker_nice: int = 10
    # A thread per model that runs urgent batches (urgency below the default
    # 3) beside the batch in progress while every worker is busy.
    urgent_lane: bool = True
    # ONNX Runtime threads inside one run (0: one per core).
    intra_op_threads: int = 1
    # Spinning burns an idle edge box's cores; off unless asked for.
    allow_spinning: bool = False
    max_batch_size: int = 32
    # How long a partial batch may wait for company while a worker is idle.
    # 0: a free worker takes what is queued at once; under load, batches form
    # from what queues during the previous run (measured better for both a
    # tiny and a memory-bound model, docs/BENCHMARKS.md).
    max_batch_delay_ms: float = 0.0
    # weight(u) for urgencies 0..7; None: doubling per level (128, 64, ..., 1).
    priority_weights: tuple[float, ...] | None = None
    priority_mode: str = "fair"  # fair | strict
    queue_limit: int = 2048
    # Deadline of a queued request that names none (header or V2 parameters.timeout).
    queue_timeout_ms: float = 30_000.0
    # Largest number of tensor elements one request may carry (memory bombs).
    max_request_elements: int = 1 << 24
    # The result cache: identical inferences answered once (see
    # inference/results.py). memory://, redis://HOST:PORT/DB, memcached://HOST:PORT.
    cache_enabled: bool = True
    cache_url: str = "memory://"
    # Bytes the memory backend holds (LRU beyond that).
    cache_bytes: int = 256 * MiB
    cache_ttl_s: float = 3600 * SECONDS
    # Longest a request waits on a remote cache backend before it counts as a miss.
    cache_timeout_ms: float = 100.0


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    http_port: int = 8000  # cleartext HTTP/1.1 + h2c; -1 disables
    port: int = 8443  # TLS HTTP/1.1 + h2; -1 disables
    # HTTP/3 over UDP; None: the TLS port's number, 0 disables. Needs TLS.
    quic_port: int | None = None
    # QUIC Retry: validate a client's address with one more round trip before
    # keeping any state for it (RFC 9000 section 8.1).
    quic_retry: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    certs_dir: Path = field(default_factory=lambda: Path("certs"))
    log_level: str = "info"
    access_log: bool = False
    graceful_timeout_s: float = 10 * SECONDS
    loop: str = "auto"  # auto | asyncio | uvloop
    server_header: str = "rawserve"
    # Server processes sharing the listeners (serving/workers.py); 1: this
    # process serves; 0: one per core.
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    inference: InferenceSettings = field(default_factory=InferenceSettings)

    def __post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("--certfile and --keyfile must be given together")

    def with_options(self, **options: Any) -> Config:
        """A copy with ``options`` applied; ``limit_<name>`` keys set limits."""
        limit_names = {f.name for f in fields(Limits)}
        inference_names = {f.name for f in fields(InferenceSettings)}
        limits: dict[str, Any] = {}
        inference: dict[str, Any] = {}
        top: dict[str, Any] = {}
        for key, value in options.items():
            if key.startswith("limit_") and key[6:] in limit_names:
                limits[key[6:]] = value
            elif key in limit_names:
                limits[key] = value
            elif key in inference_names:
                inference[key] = value
            else:
                top[key] = value
        unknown = set(top) - {f.name for f in fields(Config)}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        cfg = replace(self, **top)
        if limits:
            cfg = replace(cfg, limits=replace(cfg.limits, **limits))
        if inference:
            cfg = replace(cfg, inference=replace(cfg.inference, **inference))
        return cfg
