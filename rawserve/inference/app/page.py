"""``GET /``: a page people can try (static/index.html). Draw a digit or drop
an image, see the prediction and the class probabilities, and beside them
what rawserve is about: the HTTP version the browser used, the
``Server-Timing`` queue and inference times, a priority chooser, and a live
view of ``/metrics`` while a burst of low-priority requests runs.

One HTML file with plain JavaScript: no framework, no build step, and
nothing fetched but this server's own endpoints (``/v2/models/digits/infer``
and ``/metrics``), so it works on a box without internet access.
"""

from __future__ import annotations

import functools
from importlib import resources

from rawserve.responses import HTMLResponse
from rawserve.routing import APIRouter

router = APIRouter()


@functools.cache
def page_html() -> bytes:
    return resources.files("rawserve.inference.app").joinpath("static/index.html").read_bytes()


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def index() -> HTMLResponse:
    # no-cache: a page from an older server must not outlive an upgrade.
    return HTMLResponse(page_html(), headers={"cache-control": "no-cache"})
