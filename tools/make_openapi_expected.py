"""Write what FastAPI generates for the tutorial-style apps in
tests/apps/openapi/ to tests/data/openapi/<app>.json, the documents
tests/test_openapi.py compares rawserve's with.

rawserve never imports FastAPI, and the test environment does not have it:
run this once, with a Python that has FastAPI, in a throwaway venv::

    python3 -m venv /tmp/fastapi-venv
    /tmp/fastapi-venv/bin/pip install fastapi pydantic python-multipart
    /tmp/fastapi-venv/bin/python tools/make_openapi_expected.py

Each app's source imports from ``rawserve``; here the same source runs with
``fastapi`` in its place (nothing else changes, the promise rawserve makes).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import fastapi

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps" / "openapi"
OUT = ROOT / "tests" / "data" / "openapi"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted(APPS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        source = path.read_text().replace("rawserve", "fastapi")
        module = types.ModuleType(f"openapi_app_{path.stem}")
        sys.modules[module.__name__] = module
        exec(compile(source, str(path), "exec"), module.__dict__)
        document = module.app.openapi()
        target = OUT / f"{path.stem}.json"
        target.write_text(json.dumps(document, indent=2) + "\n")
        print(f"{target.relative_to(ROOT)}: FastAPI {fastapi.__version__}")


if __name__ == "__main__":
    main()
