"""Tutorial-style apps whose /openapi.json is compared with FastAPI's.

Each module imports from ``rawserve`` only; tools/make_openapi_expected.py
runs the same source with ``fastapi`` in its place (in a throwaway venv that
has FastAPI) and writes what FastAPI generates to tests/data/openapi/.
"""
