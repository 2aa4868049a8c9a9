"""The command line: flags into Config, and one-line errors with status 1 for
everything an operator can get wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from rawserve import __main__ as cli
from rawserve.core.config import Config, Limits
from rawserve.core.errors import ConfigError
from rawserve.serving.server import resolve_loop

ROOT = Path(__file__).resolve().parent.parent


def parse(*argv: str) -> Config:
    return cli.build_config(cli.build_parser().parse_args(list(argv)))


def run_cli(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The tests run from a checkout that may not be pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "rawserve", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("rawserve: error: "), stderr
    for fragment in fragments:
        assert fragment in last, stderr
    return last


# -- flags into Config ----------------------------------------------------------


def test_no_flags_give_the_default_config() -> None:
    assert parse() == Config()


def test_flags_set_their_config_fields(tmp_path: Path) -> None:
    cfg = parse(
        "--host", "0.0.0.0",
        "--http-port", "8080",
        "--port", "9443",
        "--quic-port", "9444",
        "--certs-dir", str(tmp_path),
        "--log-level", "debug",
        "--access-log",
        "--graceful-timeout", "2.5",
        "--loop", "asyncio",
    )  # fmt: skip
    assert cfg == Config(
        host="0.0.0.0",
        http_port=8080,
        port=9443,
        quic_port=9444,
        certs_dir=tmp_path,
        log_level="debug",
        access_log=True,
        graceful_timeout_s=2.5,
        loop="asyncio",
    )


def test_ports_can_be_disabled() -> None:
    cfg = parse("--http-port", "-1", "--port", "-1", "--quic-port", "0")
    assert (cfg.http_port, cfg.port, cfg.quic_port) == (-1, -1, 0)


def test_quic_port_defaults_to_the_tls_port() -> None:
    assert parse("--port", "9443").quic_port is None


async def test_http3_listens_on_the_tls_port_number_and_the_banner_says_so() -> None:
    from rawserve import RawServe
    from rawserve.serving.server import Server

    cfg = Config(http_port=-1, port=0, certs_dir=ROOT / "certs")
    async with Server(RawServe(), cfg) as server:
        port = server.https_port
        assert server.quic_port == port
        assert server.urls() == [
            f"https://127.0.0.1:{port}  (HTTP/1.1, h2)",
            f"https://127.0.0.1:{port}  (HTTP/3, UDP)",
        ]
        assert server.alt_svc == b'h3=":%d"; ma=86400' % port


async def test_quic_port_zero_turns_http3_off() -> None:
    from rawserve import RawServe
    from rawserve.serving.server import Server

    cfg = Config(http_port=-1, port=0, quic_port=0, certs_dir=ROOT / "certs")
    async with Server(RawServe(), cfg) as server:
        assert server.quic_port is None and server.alt_svc is None
        assert len(server.urls()) == 1


async def test_a_udp_port_in_use_is_a_one_line_error() -> None:
    from rawserve import RawServe
    from rawserve.core.errors import ConfigError
    from rawserve.serving.server import Server

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = Config(http_port=-1, port=0, quic_port=port, certs_dir=ROOT / "certs")
        with pytest.raises(ConfigError) as info:
            async with Server(RawServe(), cfg):
                pass
    message = str(info.value)
    assert "\n" not in message
    assert f"UDP port {port}" in message and "already in use" in message


def test_quic_retry_flag() -> None:
    assert parse("--quic-retry").quic_retry is True
    assert parse().quic_retry is False


def test_access_log_can_be_switched_off() -> None:
    assert parse("--access-log", "--no-access-log").access_log is False


def test_certfile_and_keyfile() -> None:
    cfg = parse("--certfile", "c.pem", "--keyfile", "k.pem")
    assert (cfg.certfile, cfg.keyfile) == ("c.pem", "k.pem")


@pytest.mark.parametrize("field", [f.name for f in fields(Limits)])
def test_every_limit_has_a_flag(field: str) -> None:
    default = getattr(Limits(), field)
    value: Any = default + 1 if isinstance(default, int) else default + 1.5
    flag = "--limit-" + field.replace("_", "-")
    cfg = parse(flag, str(value))
    got = getattr(cfg.limits, field)
    assert got == value
    assert type(got) is type(default)
    # Only that limit changed.
    assert cfg.limits == Limits(**{field: value})


def test_limit_flags_combine_with_each_other() -> None:
    cfg = parse("--limit-max-body-bytes", "1_000", "--limit-idle-timeout-s", "0.5")
    assert (cfg.limits.max_body_bytes, cfg.limits.idle_timeout_s) == (1000, 0.5)


def test_help_lists_every_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for f in fields(Limits):
        assert "--limit-" + f.name.replace("_", "-") in out


# -- bad flag values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--http-port", "abc"], "--http-port"),
        (["--port", "70000"], "--port"),
        (["--quic-port", "-1"], "--quic-port"),
        (["--http-port", "-2"], "--http-port"),
        (["--graceful-timeout", "-1"], "--graceful-timeout"),
        (["--graceful-timeout", "soon"], "--graceful-timeout"),
        (["--log-level", "loud"], "--log-level"),
        (["--loop", "trio"], "--loop"),
        (["--limit-max-body-bytes", "-5"], "--limit-max-body-bytes"),
        (["--limit-max-body-bytes", "1.5"], "--limit-max-body-bytes"),
        (["--limit-idle-timeout-s", "nan"], "--limit-idle-timeout-s"),
        (["--limit-max-frame-bytes", "100"], "--limit-max-frame-bytes"),
        (["--limit-initial-window-bytes", str(2**31)], "--limit-initial-window-bytes"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--keyfile", "k.pem"], "--certfile"),
        (["--certfile", "c.pem"], "--keyfile"),
        (["--host", ""], "--host"),
    ],
)
def test_bad_flag_values_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, fragment)
    assert len(captured.err.splitlines()) == 1


# -- app loading -----------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory for app modules; sys.path and sys.modules are put back."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(directory: Path, source: str) -> str:
    name = f"app_{uuid.uuid4().hex[:12]}"
    (directory / f"{name}.py").write_text(source)
    return name


def test_module_colon_attribute(app_dir: Path) -> None:
    name = write_module(app_dir, "application = object()\n")
    app = cli.load_app(f"{name}:application")
    assert app is sys.modules[name].application


def test_module_alone_means_attribute_app(app_dir: Path) -> None:
    name = write_module(app_dir, "app = 'the app'\n")
    assert cli.load_app(name) == "the app"


def test_dotted_attribute(app_dir: Path) -> None:
    name = write_module(app_dir, "class ns:\n    app = 'inner'\n")
    assert cli.load_app(f"{name}:ns.app") == "inner"


def test_factory_is_called(app_dir: Path) -> None:
    name = write_module(app_dir, "def make():\n    return 'made'\n")
    assert cli.load_app(f"{name}:make()") == "made"


def test_module_in_a_package_of_the_working_directory(app_dir: Path) -> None:
    pkg = f"pkg_{uuid.uuid4().hex[:12]}"
    (app_dir / pkg).mkdir()
    (app_dir / pkg / "__init__.py").write_text("")
    (app_dir / pkg / "main.py").write_text("app = 42\n")
    assert cli.load_app(f"{pkg}.main:app") == 42


@pytest.mark.parametrize(
    ("source", "spec", "fragments"),
    [
        (None, "nosuchmodule_{uid}:app", ["nosuchmodule_", "no module named"]),
        ("other = 1\n", "{mod}:app", ["{mod}", "has no attribute 'app'"]),
        ("x = 1 / 0\n", "{mod}:app", ["{mod}", "ZeroDivisionError", "{mod}.py:1"]),
        ("import not_installed_dep_xyz\n", "{mod}", ["{mod}", "not_installed_dep_xyz"]),
        ("def broken(:\n", "{mod}", ["{mod}", "SyntaxError"]),
        ("def make():\n    raise RuntimeError('no model')\n", "{mod}:make()", ["no model"]),
        ("make = 3\n", "{mod}:make()", ["not callable"]),
        ("app = None\n", "{mod}", ["is None"]),
        (None, "not a module", ["not of the form"]),
        (None, ":app", ["not of the form"]),
    ],
)
def test_app_loading_errors_name_the_module_and_the_cause(
    app_dir: Path, source: str | None, spec: str, fragments: list[str]
) -> None:
    uid = uuid.uuid4().hex[:8]
    mod = write_module(app_dir, source) if source is not None else "unused"
    with pytest.raises(ConfigError) as info:
        cli.load_app(spec.format(mod=mod, uid=uid))
    message = str(info.value)
    for fragment in fragments:
        assert fragment.format(mod=mod) in message
    assert "\n" not in cli._one_line(message)


def test_unimportable_app_exits_1_without_traceback(tmp_path: Path) -> None:
    result = run_cli("nosuchmodule:app", "--port", "-1", "--quic-port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "nosuchmodule")
    assert len(result.stderr.strip().splitlines()) == 1


def test_app_raising_on_import_exits_1_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "crashing.py").write_text("import os\nraise RuntimeError('model file missing')\n")
    result = run_cli("crashing:app", "--port", "-1", "--quic-port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "crashing", "model file missing", "crashing.py:2")


# -- loop selection --------------------------------------------------------------


def test_loop_asyncio_is_always_available() -> None:
    assert resolve_loop("asyncio") == "asyncio"


def test_loop_auto_picks_uvloop_when_importable() -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        expected = "asyncio"
    else:
        expected = "uvloop"
    assert resolve_loop("auto") == expected


def test_loop_without_uvloop_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert resolve_loop("auto") == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        resolve_loop("uvloop")


# -- certificates ------------------------------------------------------------------


def test_unreadable_certificate_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = run_cli(
        "--certfile", str(missing), "--keyfile", str(missing), "--quic-port", "0", cwd=tmp_path
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot read certificate file", str(missing))


def test_invalid_certificate_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    result = run_cli("--certfile", str(bad), "--keyfile", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, str(bad))


def test_certs_command_generates_then_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    assert cli.main(["certs", "--certs-dir", str(certs)]) == 0
    first = capsys.readouterr().out
    assert first.startswith("generated")
    assert f"certfile: {certs / 'dev-cert.pem'}" in first
    assert f"keyfile: {certs / 'dev-key.pem'}" in first
    assert cli.main(["certs", "--certs-dir", str(certs)]) == 0
    assert capsys.readouterr().out.startswith("reusing")


def test_certs_command_rejects_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["certs", "--port", "1"]) == 1
    assert_one_line_error(capsys.readouterr().err, "--port")


# -- the server's own errors (needs serving.server and inference.app) ---------


def test_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "--host", "127.0.0.1",
            "--http-port", str(port),
            "--port", "-1",
            "--quic-port", "0",
            cwd=tmp_path,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, str(port))


def test_the_server_freezes_what_it_built_before_serving(tmp_path: Path) -> None:
    """`python -m rawserve` moves the objects its imports and app construction
    made out of the cyclic collector's sight (gc.freeze, see
    __main__.frozen), and sets its thresholds: asked from inside the served
    app itself, through a real socket."""
    import httpx

    source = (
        "import gc\n"
        "from rawserve import RawServe\n"
        "app = RawServe()\n"
        "@app.get('/gc')\n"
        "async def collector() -> dict:\n"
        "    return {'frozen': gc.get_freeze_count(), 'threshold': list(gc.get_threshold())}\n"
    )
    name = write_module(tmp_path, source)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "rawserve", f"{name}:app", "--http-port", str(port)]
    argv += ["--port", "-1", "--quic-port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded: the server prints its banner or exits
            if line.startswith("rawserve ready"):
                break
        answer = httpx.get(f"http://127.0.0.1:{port}/gc", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer["frozen"] > 1_000, answer
    assert answer["threshold"][0] == 2_000, answer
