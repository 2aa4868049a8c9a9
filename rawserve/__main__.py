"""The command line: ``python -m rawserve [module:app] [options]`` and
``python -m rawserve certs [--certs-dir DIR]``.

A thin layer over Config: every flag is a Config field, every limit a
``--limit-<name>`` flag generated from Limits. Errors the user can fix are one
line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

from rawserve.core.config import Config, Limits
from rawserve.core.errors import ConfigError

PROG = "rawserve"
DEFAULT_APP = "rawserve.inference.app:app"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOOPS = ("auto", "asyncio", "uvloop")
MAX_PORT = 65535
# RFC 9113 6.5.2 bounds; other limits only need to be non-negative.
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "max_frame_bytes": (2**14, 2**24 - 1),
    "initial_window_bytes": (0, 2**31 - 1),
    # The connection window starts at 65535 and WINDOW_UPDATE can only grow it.
    "connection_window_bytes": (65535, 2**31 - 1),
    "max_header_bytes": (1, math.inf),
}


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the usage block and exit 2; a flag error is one
        # line and status 1 like every other configuration error.
        raise ConfigError(f"{message} (see --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help ends here: main() returns the status instead of raising SystemExit.
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--log-level=debug" in args or _follows(args, "--log-level", "debug")
    try:
        if args[:1] == ["certs"]:
            return _certs_command(args[1:])
        return _serve_command(args)
    except ConfigError as exc:
        if debug and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except _Exit as exc:
        return exc.status
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = _Parser(
        prog=f"python -m {PROG}",
        description="Serve an app over HTTP/1.1, HTTP/2 and HTTP/3.",
        epilog=f"Generate or show the development certificate: python -m {PROG} certs "
        "[--certs-dir DIR]",
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="module:app",
        help=f"the app to serve: 'module:attribute', 'module' (attribute 'app') or "
        f"'module:factory()'; default {DEFAULT_APP}",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind (%(default)s)")
    parser.add_argument(
        "--http-port",
        metavar="PORT",
        type=_port(-1),
        default=defaults.http_port,
        help="cleartext HTTP/1.1 + h2c port; -1 disables (%(default)s)",
    )
    parser.add_argument(
        "--port",
        metavar="PORT",
        type=_port(-1),
        default=defaults.port,
        help="TLS HTTP/1.1 + h2 port; -1 disables (%(default)s)",
    )
    parser.add_argument(
        "--quic-port",
        metavar="PORT",
        type=_port(0),
        default=defaults.quic_port,
        help="HTTP/3 (QUIC) UDP port; default: the TLS port's number; 0 disables "
        "(and with it the Alt-Svc advertisement)",
    )
    parser.add_argument(
        "--quic-retry",
        action=argparse.BooleanOptionalAction,
        default=defaults.quic_retry,
        help="validate QUIC clients' addresses with a Retry round trip before keeping "
        "state for them (%(default)s)",
    )
    parser.add_argument("--certfile", help="PEM certificate (chain) for TLS")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    parser.add_argument(
        "--certs-dir",
        type=Path,
        default=defaults.certs_dir,
        help="where the development certificate lives when no --certfile is given (%(default)s)",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=defaults.log_level, help="(%(default)s)"
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=defaults.access_log,
        help="log one line per request",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=_number(float, "--graceful-timeout", (0, math.inf)),
        default=defaults.graceful_timeout_s,
        metavar="SECONDS",
        help="time in-flight requests get to finish on shutdown (%(default)s)",
    )
    parser.add_argument("--loop", choices=LOOPS, default=defaults.loop, help="(%(default)s)")
    parser.add_argument(
        "--workers",
        type=_number(int, "--workers", (0, 1024)),
        default=defaults.workers,
        metavar="N",
        help="server processes sharing the ports, each with its own loop and models; "
        "0: one per core (%(default)s)",
    )
    inf = defaults.inference
    engine = parser.add_argument_group("inference (the built-in app)")
    engine.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="NAME=PATH",
        help="serve the ONNX model at PATH as NAME (repeatable); default: the bundled "
        "'digits' classifier",
    )
    engine.add_argument(
        "--model-dir",
        default=None,
        metavar="[NAME=]DIR",
        help="serve every ONNX model in DIR (a model repository as KServe mounts it "
        "at /mnt/models: model.onnx, NAME.onnx, NAME/model.onnx, NAME/VERSION/model.onnx); "
        "NAME names the one model file at the top (default: its stem, and DIR's name "
        "for model.onnx); see docs/DEPLOY.md",
    )
    engine.add_argument(
        "--model-workers",
        type=_number(int, "--model-workers", (1, 256)),
        default=inf.model_workers,
        metavar="N",
        help="worker threads per model, each running one batch at a time (%(default)s)",
    )
    engine.add_argument(
        "--worker-nice",
        type=_number(int, "--worker-nice", (0, 19)),
        default=inf.worker_nice,
        metavar="N",
        help="run the model worker threads N nice levels below the event loop and the "
        "urgent lane (Linux), so that on a busy core those go first; 0: the same (%(default)s)",
    )
    engine.add_argument(
        "--urgent-lane",
        action=argparse.BooleanOptionalAction,
        default=inf.urgent_lane,
        help="one more thread per model that runs urgent requests (urgency below 3) beside "
        "the batch in progress when every worker is busy (on)",
    )
    engine.add_argument(
        "--intra-op-threads",
        type=_number(int, "--intra-op-threads", (0, 1024)),
        default=inf.intra_op_threads,
        metavar="N",
        help="ONNX Runtime threads inside one run; 0: one per core (%(default)s)",
    )
    engine.add_argument(
        "--allow-spinning",
        action=argparse.BooleanOptionalAction,
        default=inf.allow_spinning,
        help="let ONNX Runtime threads spin between runs (off: right for edge boxes)",
    )
    engine.add_argument(
        "--max-batch-size",
        type=_number(int, "--max-batch-size", (1, 65536)),
        default=inf.max_batch_size,
        metavar="N",
        help="(%(default)s)",
    )
    engine.add_argument(
        "--max-batch-delay-ms",
        type=_number(float, "--max-batch-delay-ms", (0, 60_000)),
        default=inf.max_batch_delay_ms,
        metavar="MS",
        help="how long a partial batch may wait for more items (%(default)s)",
    )
    engine.add_argument(
        "--priority-weights",
        default=None,
        metavar="W0,...,W7",
        help="weight of each urgency 0..7 in the fair scheduler (default doubling: "
        "128,64,32,16,8,4,2,1)",
    )
    engine.add_argument(
        "--priority-mode",
        choices=("fair", "strict"),
        default=inf.priority_mode,
        help="fair: weighted, nobody starves; strict: always the most urgent first (%(default)s)",
    )
    engine.add_argument(
        "--queue-limit",
        type=_number(int, "--queue-limit", (1, 10_000_000)),
        default=inf.queue_limit,
        metavar="N",
        help="queued requests per model before 503 (%(default)s)",
    )
    engine.add_argument(
        "--queue-timeout-ms",
        type=_number(float, "--queue-timeout-ms", (0, math.inf)),
        default=inf.queue_timeout_ms,
        metavar="MS",
        help="deadline of a queued request that sets none; 0: none (%(default)s)",
    )
    cache = parser.add_argument_group("result cache (the built-in app)")
    cache.add_argument(
        "--cache",
        dest="cache_enabled",
        action=argparse.BooleanOptionalAction,
        default=inf.cache_enabled,
        help="answer identical inferences from the result cache (--no-cache: off)",
    )
    cache.add_argument(
        "--cache-url",
        default=inf.cache_url,
        metavar="URL",
        help="memory://, redis://HOST:PORT/DB (extra 'redis') or memcached://HOST:PORT "
        "(extra 'memcached') (%(default)s)",
    )
    cache.add_argument(
        "--cache-bytes",
        type=_number(int, "--cache-bytes", (0, 1 << 48)),
        default=inf.cache_bytes,
        metavar="N",
        help="bytes of results the memory backend keeps, least recently used out (%(default)s)",
    )
    cache.add_argument(
        "--cache-ttl",
        dest="cache_ttl_s",
        type=_number(float, "--cache-ttl", (0.001, 10 * 365 * 86400)),
        default=inf.cache_ttl_s,
        metavar="SECONDS",
        help="how long a result stays cached (%(default)s)",
    )
    cache.add_argument(
        "--cache-timeout-ms",
        type=_number(float, "--cache-timeout-ms", (1, 60_000)),
        default=inf.cache_timeout_ms,
        metavar="MS",
        help="a remote backend slower than this is a miss (%(default)s)",
    )
    limits = parser.add_argument_group("limits")
    hints = get_type_hints(Limits)
    for f in fields(Limits):
        kind: type[int] | type[float] = float if hints[f.name] is float else int
        flag = "--limit-" + f.name.replace("_", "-")
        limits.add_argument(
            flag,
            dest=f"limit_{f.name}",
            type=_number(kind, flag, LIMIT_BOUNDS.get(f.name, (0, math.inf))),
            default=None,
            metavar=_metavar(f.name),
            help=f"(default {getattr(defaults.limits, f.name)})",
        )
    return parser


def build_config(namespace: argparse.Namespace) -> Config:
    """The Config the parsed flags describe; ConfigError when they cannot work."""
    ns = vars(namespace)
    options: dict[str, Any] = {
        "host": ns["host"],
        "http_port": ns["http_port"],
        "port": ns["port"],
        "quic_port": ns["quic_port"],
        "quic_retry": ns["quic_retry"],
        "certfile": ns["certfile"],
        "keyfile": ns["keyfile"],
        "certs_dir": ns["certs_dir"],
        "log_level": ns["log_level"],
        "access_log": ns["access_log"],
        "graceful_timeout_s": ns["graceful_timeout"],
        "loop": ns["loop"],
        "workers": ns["workers"],
    }
    for f in fields(Limits):
        value = ns[f"limit_{f.name}"]
        if value is not None:
            options[f"limit_{f.name}"] = value
    options.update(
        models=tuple(ns["models"] or ()),
        model_dir=ns["model_dir"],
        model_workers=ns["model_workers"],
        worker_nice=ns["worker_nice"],
        urgent_lane=ns["urgent_lane"],
        intra_op_threads=ns["intra_op_threads"],
        allow_spinning=ns["allow_spinning"],
        max_batch_size=ns["max_batch_size"],
        max_batch_delay_ms=ns["max_batch_delay_ms"],
        priority_mode=ns["priority_mode"],
        queue_limit=ns["queue_limit"],
        queue_timeout_ms=ns["queue_timeout_ms"],
        cache_enabled=ns["cache_enabled"],
        cache_url=ns["cache_url"],
        cache_bytes=ns["cache_bytes"],
        cache_ttl_s=ns["cache_ttl_s"],
        cache_timeout_ms=ns["cache_timeout_ms"],
    )
    if ns["priority_weights"] is not None:
        from rawserve.inference.scheduler import parse_weights

        try:
            options["priority_weights"] = parse_weights(ns["priority_weights"])
        except ConfigError as exc:
            raise ConfigError(f"--priority-weights: {exc}") from None
    for entry in options["models"]:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model {entry!r}: expected NAME=PATH")
        if not Path(path).is_file():
            raise ConfigError(f"--model {entry!r}: no such file {path!r}")
    if options["model_dir"] is not None:
        # NAME=DIR, unless the whole text is a directory; the models in it are
        # found at startup (inference/model.py, model_repository).
        text = options["model_dir"]
        name, _, directory = text.partition("=")
        if not Path(text).is_dir() and not (name and directory and Path(directory).is_dir()):
            raise ConfigError(f"--model-dir {text!r}: no such directory")
    if not options["host"]:
        raise ConfigError("--host must not be empty")
    return Config().with_options(**options)


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (``module`` alone means attribute ``app``;
    ``module:factory()`` calls the factory) with the working directory on sys.path."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    if not _dotted(module_name) or not _dotted(attr):
        raise ConfigError(
            f"app {spec!r} is not of the form 'module:attribute' (for example 'main:app')"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import app module {module_name!r}: no module named {exc.name!r} "
                f"(searched {cwd} and sys.path)"
            ) from exc
        raise ConfigError(f"cannot import app module {module_name!r}: {_describe(exc)}") from exc
    except Exception as exc:
        # Whatever the user's module raises while importing is theirs to fix;
        # name it and where it happened.
        raise ConfigError(
            f"error while importing app module {module_name!r}: {_describe(exc)}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"app module {module_name!r} ({_where(module)}) has no attribute {attr!r}"
            ) from None
    if call:
        if not callable(obj):
            raise ConfigError(f"{module_name}:{attr} is not callable, so it is not a factory")
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(
                f"app factory {module_name}:{attr}() failed: {_describe(exc)}"
            ) from exc
    if obj is None:
        raise ConfigError(f"{module_name}:{attr} is None, not an app")
    return obj


def configure_logging(level_name: str) -> None:
    level = getattr(logging, level_name.upper())
    logging.basicConfig(format=LOG_FORMAT, level=level)
    logging.getLogger().setLevel(level)
    # Their debug output is one record per frame or header field: at debug
    # level it would bury rawserve's own records.
    for noisy in ("hpack", "h2"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))


def _serve_command(args: list[str]) -> int:
    namespace = build_parser().parse_args(args)
    config = build_config(namespace)
    configure_logging(config.log_level)
    if config.certfile is not None:
        from rawserve.serving.tls import load_certificate_error

        reason = load_certificate_error(config.certfile, config.keyfile)
        if reason is not None:
            raise ConfigError(reason)
    # Resolved here so a missing uvloop is reported before the app is imported.
    from rawserve.serving.server import resolve_loop, run

    config = config.with_options(loop=resolve_loop(config.loop))

    def make_app() -> Any:
        if namespace.app:
            return frozen(load_app(namespace.app))
        from rawserve.inference.app import create_app

        return frozen(create_app(config.inference, graceful_timeout_s=config.graceful_timeout_s))

    # The cyclic collector's default first threshold (700 net container
    # allocations) ran a young collection every ~18 h2c /predict requests and
    # a full one, over the ~40,000 objects the imports and the model runtime
    # leave, every ~2,000 (29 ms each): 26 us per request in all (gc.callbacks,
    # 22,000 requests). At 2,000: 8.6 us, young collections of 0.4 ms, a full
    # one every ~10,000 requests. 10,000 saved a little more CPU but its
    # 1.5 ms pauses raised the benchmark's p99 (12-18 against 7-9 ms). Set by
    # the server's entry point, not by the library an application embeds.
    # Those ~40,000 objects are frozen once the app is built (frozen()), so
    # a full collection now walks only what came after. Since a finished
    # request no longer leaves a reference cycle (serving/connection.py),
    # young collections come about once per 700 h2c requests, not per 100.
    gc.set_threshold(2_000, 10, 10)
    try:
        if config.workers != 1:
            from rawserve.serving import workers

            # Each worker makes its own app (engine, models) after the fork.
            return workers.run(make_app, config)
        run(make_app(), config)
    except OSError as exc:
        # server.run turns bind failures into ConfigError; anything else the OS
        # refuses is still the operator's to fix, not a crash.
        raise ConfigError(f"{exc.strerror or exc}") from exc
    return 0


def frozen(app: Any) -> Any:
    """``app``, with every object the process holds so far (the imports, the
    app and its routes: about 33,000 objects, nearly all it will ever keep)
    moved out of the cyclic collector's sight (``gc.freeze``). A full
    collection walked them all, 20-29 ms each time, a pause in whatever
    requests were in flight (the benchmark's p99, a u=0 probe); after the
    freeze it walks only what came later. Frozen objects are never collected:
    what the imports and the app's construction left as garbage stays, once.
    The entry point's choice, like the thresholds below; under --workers
    each worker freezes after building its own app."""
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    return app


def _certs_command(args: list[str]) -> int:
    parser = _Parser(
        prog=f"python -m {PROG} certs",
        description="Generate (or reuse) the self-signed development certificate for "
        "localhost, 127.0.0.1 and ::1, and print its paths.",
    )
    parser.add_argument("--certs-dir", type=Path, default=Config().certs_dir)
    namespace = parser.parse_args(args)
    from cryptography import x509

    from rawserve.serving.tls import ensure_dev_certificate

    certfile, keyfile, generated = ensure_dev_certificate(namespace.certs_dir)
    expires = x509.load_pem_x509_certificate(certfile.read_bytes()).not_valid_after_utc
    state = "generated" if generated else "reusing"
    print(f"{state} development certificate, valid until {expires:%Y-%m-%d}")
    print(f"certfile: {certfile}")
    print(f"keyfile: {keyfile}")
    return 0


def _port(lowest: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
        if not lowest <= value <= MAX_PORT:
            raise argparse.ArgumentTypeError(f"port {value} is outside {lowest}..{MAX_PORT}")
        return value

    parse.__name__ = "port"
    return parse


def _number(
    kind: type[int] | type[float], flag: str, bounds: tuple[float, float]
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        low, high = bounds
        if math.isnan(value) or not low <= value <= high:
            upper = "" if math.isinf(high) else f" and at most {_show(high)}"
            raise argparse.ArgumentTypeError(f"{text} must be at least {_show(low)}{upper}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _show(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def _metavar(name: str) -> str:
    if name.endswith("_per_s"):
        return "N"
    if name.endswith("_bytes"):
        return "BYTES"
    if name.endswith("_s"):
        return "SECONDS"
    return "N"


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text  # its str already says file and line
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen")
    ]
    if frames:
        text += f" ({_relative(frames[-1].filename)}:{frames[-1].lineno})"
    return text


def _where(module: Any) -> str:
    path = getattr(module, "__file__", None)
    return _relative(path) if isinstance(path, str) else str(module.__name__)


def _relative(path: str) -> str:
    # Paths under the working directory are shown as the user would type them.
    cwd = os.getcwd()
    if path.startswith(cwd + os.sep):
        return path[len(cwd) + 1 :]
    return path


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _follows(args: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(args))


if __name__ == "__main__":
    sys.exit(main())
