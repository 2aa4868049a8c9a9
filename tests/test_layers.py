"""Imports point down only (docs/ARCHITECTURE.md, "The map").

Every module under rawserve/ is parsed with ``ast``; every import it makes,
at top level, inside functions, under TYPE_CHECKING, absolute or relative, is
an arrow that must be allowed by the table below. A module the table does not
know fails the test until someone classifies it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rawserve"

L0 = "L0 core values"
L1 = "L1 sans-IO"
L2 = "L2 async"
L3 = "L3 I/O"
RANK = {L0: 0, L1: 1, L2: 2, L3: 3}

# Module (dotted, without the "rawserve." prefix; "" is the package itself) ->
# layer. Entries ending in ".*" cover a whole subpackage.
LAYERS: dict[str, str] = {
    # Core values: what every part agrees on.
    "core": L0,
    "core.*": L0,
    # Protocol adapters: sans-IO, and never each other.
    "protocols": L1,
    "protocols.*": L1,
    # Inference mixes layers, module by module: the scheduler, the model runtime
    # and the V2 codec are sans-IO; the engine, the built-in app and metrics
    # are async.
    "inference": L1,
    "inference.scheduler": L1,
    "inference.model": L1,
    "inference.images": L1,
    "inference.v2": L1,
    "inference.cache": L1,
    "inference.errors": L1,
    "inference.results": L2,
    "inference.engine": L2,
    "inference.runcost": L2,
    "inference.threads": L2,
    "inference.metrics": L2,
    # The built-in app is an app like a user's: it may not touch sockets.
    "inference.app": L2,
    "inference.app.*": L2,
    # The app surface: the modules FastAPI users import from.
    "applications": L2,
    "routing": L2,
    "routetable": L2,
    "serialization": L2,
    "params": L2,
    "requests": L2,
    "responses": L2,
    "datastructures": L2,
    "exceptions": L2,
    "status": L2,
    "encoders": L2,
    "background": L2,
    "exception_handlers": L2,
    "openapi": L2,
    "openapi.*": L2,
    # Internals of the surface, each about one thing (FastAPI's dependencies/,
    # starlette's convertors, formparsers and concurrency).
    "dependencies": L2,
    "dependencies.*": L2,
    "validation": L2,
    "validation.*": L2,
    "convertors": L2,
    "formparsers": L2,
    "concurrency": L2,
    # Serving: the stream driver and request body are protocol-neutral (L2);
    # the socket glue, TLS and the Server are I/O.
    "serving": L2,
    "serving.stream": L2,
    "serving.body": L2,
    "serving.push": L2,
    "serving.connection": L3,
    "serving.tcp": L3,
    "serving.pressure": L3,
    "serving.quic": L3,
    "serving.server": L3,
    "serving.tls": L3,
    "serving.workers": L3,
    # The package facade re-exports run() and Server, so it sits on top.
    "": L3,
    "__main__": L3,
    "testclient": L3,
    "client": L3,
    "client.*": L3,
}

# Modules whose imports make something a protocol module: L2 must never import
# one (the stream driver speaks events, not a particular HTTP version).
PROTOCOL_PACKAGE = "protocols"

# L1 modules every protocol adapter may import: the HTTP semantics that HTTP/2
# and HTTP/3 share (field and pseudo-header checks, trailers, the RFC 9218 write
# order, rate limits). Everything else in L1 stays out of each other's way.
L1_SHARED = {"protocols.semantics"}

# orjson is a pure codec (bytes <-> values, no I/O, no clock), so the V2 protocol
# codec may use it in L1; see docs/ARCHITECTURE.md. Pillow likewise for images.
L1_THIRD_PARTY = {
    "h2",
    "hpack",
    "hyperframe",
    "httptools",
    "aioquic",
    "numpy",
    "onnxruntime",
    "orjson",
    # Pillow (PIL) decodes an uploaded image's bytes to pixels, no I/O, for
    # inference.images.
    "PIL",
}
PROTOCOL_LIBRARIES = {"h2", "hpack", "hyperframe", "httptools", "aioquic"}
L1_FORBIDDEN_STDLIB = {"asyncio", "socket", "ssl", "threading", "selectors"}
L2_FORBIDDEN_STDLIB = {"socket", "ssl"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name inside the package ("protocols.http1")
    target: str  # absolute dotted name ("rawserve.events", "h2.connection")
    line: int


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> str | None:
    if name in LAYERS:
        return LAYERS[name]
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        wildcard = ".".join(parts[:i]) + ".*"
        if wildcard in LAYERS:
            return LAYERS[wildcard]
    return None


def _unit(name: str) -> str:
    """The unit an L1 module belongs to: one protocol's subpackage, else itself."""
    parts = name.split(".")
    if parts[0] == PROTOCOL_PACKAGE and len(parts) > 2:
        return ".".join(parts[:2])
    return name


def is_protocol_module(name: str) -> bool:
    return name == PROTOCOL_PACKAGE or name.startswith(PROTOCOL_PACKAGE + ".")


def collect_imports(path: Path, package_dir: Path, package: str) -> list[Import]:
    """Every import in the file, with relative ones made absolute and ``from X
    import y`` resolved to the submodule X.y when one exists."""
    name = module_name(path, package_dir)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                own = [package, *name.split(".")] if name else [package]
                base_parts = own if is_package else own[:-1]
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = base
                if candidate.startswith(package + ".") and _exists(candidate, package_dir, package):
                    target = candidate
                found.append(Import(name, target, node.lineno))
    return found


def _exists(dotted: str, package_dir: Path, package: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (package_dir / rel).with_suffix(".py").is_file() or (
        package_dir / rel / "__init__.py"
    ).is_file()


def check_arrow(imp: Import, package: str, inits: set[str]) -> str | None:
    """Why this import breaks the layering, or None."""
    layer = layer_of(imp.importer)
    assert layer is not None
    top = imp.target.split(".")[0]
    where = f"{imp.importer or package} (line {imp.line}) imports {imp.target}"
    if top == package:
        inner = imp.target[len(package) + 1 :] if imp.target != package else ""
        target_layer = layer_of(inner)
        if target_layer is None:
            return f"{where}, which is not in the layer table of tests/test_layers.py"
        if RANK[target_layer] > RANK[layer]:
            return f"{where}: {layer} may not import {target_layer} (arrow points up)"
        if layer == L1 and target_layer == L1 and inner != imp.importer:
            # A package's __init__ may gather its own submodules; the modules of
            # one protocol (protocols/http2/...) are one unit; and the HTTP
            # semantics every version shares are there for all of them.
            own_package = imp.importer and inner.startswith(imp.importer + ".")
            same_unit = _unit(inner) == _unit(imp.importer)
            if not ((imp.importer in inits and own_package) or same_unit or inner in L1_SHARED):
                return f"{where}: L1 modules may not import each other (arrow points sideways)"
        if layer == L2 and is_protocol_module(inner):
            return f"{where}: L2 may not import a protocol module"
        return None
    if layer == L3:
        return None
    stdlib = top in sys.stdlib_module_names or top == "__future__"
    if layer == L0:
        return None if stdlib else f"{where}: L0 may import the standard library only"
    if layer == L1:
        if stdlib:
            return f"{where}: L1 is sans-IO" if top in L1_FORBIDDEN_STDLIB else None
        if top in L1_THIRD_PARTY:
            return None
        return f"{where}: L1 may import only {', '.join(sorted(L1_THIRD_PARTY))}"
    if top in L2_FORBIDDEN_STDLIB:
        return f"{where}: L2 does no socket or TLS I/O"
    if top in PROTOCOL_LIBRARIES:
        return f"{where}: L2 may not use a protocol library (that is L1's job)"
    return None


def check_package(package_dir: Path, package: str = PACKAGE) -> list[str]:
    """Every layering violation in the package, as readable lines."""
    problems: list[str] = []
    files = sorted(package_dir.rglob("*.py"))
    inits = {module_name(p, package_dir) for p in files if p.name == "__init__.py"}
    for path in files:
        name = module_name(path, package_dir)
        layer = layer_of(name)
        if layer is None:
            problems.append(
                f"{path.relative_to(package_dir.parent)} is not classified: add "
                f"{name!r} to LAYERS in tests/test_layers.py (see docs/ARCHITECTURE.md, The map)"
            )
            continue
        for imp in collect_imports(path, package_dir, package):
            problem = check_arrow(imp, package, inits)
            if problem:
                problems.append(problem)
        if layer == L1:
            problems.extend(_async_in_sans_io(path, name))
    return problems


def _async_in_sans_io(path: Path, name: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{name} (line {node.lineno}): L1 is sans-IO, no {type(node).__name__}"
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)
    ]


# -- the real package ----------------------------------------------------------


def test_imports_point_down_only() -> None:
    problems = check_package(ROOT / PACKAGE)
    assert not problems, "layering violations:\n  " + "\n  ".join(problems)


def test_every_module_is_seen() -> None:
    # Guards the walker itself: an empty result would make the test above vacuous.
    names = {module_name(p, ROOT / PACKAGE) for p in (ROOT / PACKAGE).rglob("*.py")}
    assert {"core.errors", "core.config", "core.events", "core.priority"} <= names


# -- the checker catches what it should -----------------------------------------


def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / PACKAGE
    for rel, source in {"__init__.py": "", "protocols/__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return pkg


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"core/config.py": "import numpy\n"}, "L0 may import"),
        (
            {"core/events.py": "from rawserve.serving.stream import X\n", "serving/stream.py": ""},
            "points up",
        ),
        ({"protocols/http1.py": "import asyncio\n"}, "L1 is sans-IO"),
        ({"protocols/http1.py": "def f():\n    import socket\n"}, "L1 is sans-IO"),
        ({"protocols/http1.py": "import redis\n"}, "L1 may import only"),
        (
            {"protocols/http1.py": "from . import http2\n", "protocols/http2.py": ""},
            "sideways",
        ),
        (
            {"protocols/http1.py": "from .http2 import X\n", "protocols/http2.py": ""},
            "sideways",
        ),
        (
            {"protocols/http1.py": "from ..serving.stream import X\n", "serving/stream.py": ""},
            "points up",
        ),
        (
            {"protocols/http1.py": "from .http2.core import X\n", "protocols/http2/core.py": ""},
            "sideways",
        ),
        (
            {
                "protocols/semantics.py": "from .http1 import X\n",
                "protocols/http1.py": "",
            },
            "sideways",
        ),
        ({"protocols/http2.py": "async def f() -> None:\n    pass\n"}, "AsyncFunctionDef"),
        (
            {
                "serving/stream.py": "from rawserve.protocols import http2\n",
                "protocols/http2.py": "",
            },
            "L2",
        ),
        (
            {"serving/stream.py": "import rawserve.protocols.http1\n", "protocols/http1.py": ""},
            "L2",
        ),
        (
            {"serving/stream.py": "from ..protocols.http1 import C\n", "protocols/http1.py": ""},
            "L2",
        ),
        ({"applications.py": "import ssl\n"}, "L2 does no socket"),
        ({"applications.py": "import h2.connection\n"}, "protocol library"),
        (
            {
                "applications.py": "from rawserve.serving.server import Server\n",
                "serving/server.py": "",
            },
            "points up",
        ),
        ({"applications.py": "from rawserve import run\n"}, "points up"),
        (
            {
                "applications.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from rawserve.serving import tls\n",
                "serving/tls.py": "",
            },
            "points up",
        ),
        ({"gizmo.py": ""}, "is not classified"),
        (
            {"applications.py": "from rawserve.gizmo import x\n", "gizmo.py": ""},
            "not in the layer table",
        ),
    ],
)
def test_checker_reports(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = check_package(make_package(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_checker_allows_downward_and_permitted_imports(tmp_path: Path) -> None:
    files = {
        "core/errors.py": "import dataclasses\n",
        "core/priority.py": "",
        "core/events.py": "from rawserve.core.priority import Priority\n",
        "protocols/__init__.py": "from . import http1\n",
        "protocols/http1.py": "import httptools\nfrom ..core.events import RequestReceived\n",
        "protocols/http2/__init__.py": "from .connection import H2\n",
        "protocols/http2/connection.py": (
            "import h2.connection\nfrom rawserve.core import errors\nfrom .core import C\n"
            "from ..semantics import check\n"
        ),
        "protocols/http2/core.py": "import hpack\n",
        "protocols/semantics.py": "import re\n",
        "inference/__init__.py": "",
        "inference/scheduler.py": "import heapq\nimport numpy as np\n",
        "serving/stream.py": "import asyncio\nfrom rawserve.inference.scheduler import S\n",
        "applications.py": (
            "import orjson\nfrom .serving import stream\nfrom .core.events import X\n"
        ),
        "serving/server.py": "import socket, ssl\nfrom rawserve.protocols.http1 import C\n",
        "__init__.py": "from rawserve.serving.server import run\n",
    }
    assert check_package(make_package(tmp_path, files)) == []
