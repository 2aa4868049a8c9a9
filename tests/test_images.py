"""Uploaded images to model rows (rawserve.inference.images) and POST /predict
with an uploaded PNG or JPEG, end to end: the sample digits in
examples/digits/ (drawn from scikit-learn's bundled data by
tools/make_digit_samples.py) are classified; what is not an image, too many
pixels or in a mode that does not convert is a 422 that says so."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from rawserve.inference.images import (
    ImageError,
    ImageSpec,
    image_rows,
    image_sidecar,
    image_spec_for,
    looks_like_image,
)
from rawserve.inference.model import load_bundled
from tests.conftest import RunningServer, run_server

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "digits"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_SPEC = image_spec_for(str(load_bundled().path))


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


# -- the spec and the conversion, without a server ------------------------------------


def test_the_bundled_model_ships_its_image_spec() -> None:
    assert image_sidecar(load_bundled().path).name == "digits.image.json"
    assert DIGITS_SPEC == ImageSpec(
        width=8,
        height=8,
        mode="L",
        value_range=(0.0, 16.0),
        invert=True,
        crop_to_ink=True,
        stretch=True,
        layout="flat",
        max_pixels=16777216,
    )


def test_dark_ink_on_white_becomes_the_training_convention() -> None:
    # Black ink on white paper: 16 where the ink is, 0 where the paper is.
    image = Image.new("L", (8, 8), 255)
    image.putpixel((3, 2), 0)
    spec = ImageSpec(width=8, height=8, value_range=(0, 16), invert=True)
    row = image_rows(png(image), spec)
    assert row.shape == (1, 64) and row.dtype == np.float32
    assert row[0, 2 * 8 + 3] == 16.0
    assert row.sum() == 16.0


def test_transparent_pixels_are_paper_and_rgb_is_grayscaled() -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent: paper
    image.putpixel((0, 0), (0, 0, 0, 255))  # one opaque black pixel: ink
    row = image_rows(png(image), ImageSpec(width=8, height=8, value_range=(0, 1), invert=True))
    assert row[0, 0] == 1.0 and row[0, 1:].sum() == 0.0


def test_rgb_layouts() -> None:
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    chw = image_rows(png(image), ImageSpec(width=4, height=2, mode="RGB", layout="CHW"))
    hwc = image_rows(png(image), ImageSpec(width=4, height=2, mode="RGB", layout="HWC"))
    assert chw.shape == (1, 3, 2, 4) and hwc.shape == (1, 2, 4, 3)
    assert chw[0, 0].min() == 1.0 and chw[0, 1:].max() == 0.0
    assert hwc[0, :, :, 0].min() == 1.0


def test_jpeg_is_accepted_and_sniffed_by_its_magic() -> None:
    data = png(Image.new("L", (16, 16), 255), "JPEG")
    assert looks_like_image(data) and looks_like_image(png(Image.new("L", (1, 1))))
    assert not looks_like_image(b"\x93NUMPY")
    assert image_rows(data, ImageSpec(width=8, height=8)).shape == (1, 64)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\nnot really", "not a PNG or JPEG"),
        (b"GIF89a" + b"\x00" * 20, "not a PNG or JPEG"),
        (b"", "not a PNG or JPEG"),
    ],
)
def test_what_is_not_an_image_says_so(data: bytes, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        image_rows(data, ImageSpec(width=8, height=8))


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    # 5000x5000 white pixels compress to a few kilobytes.
    bomb = png(Image.new("L", (5000, 5000), 255))
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="5000x5000 pixels; the limit is 1000000 pixels"):
        image_rows(bomb, ImageSpec(width=8, height=8, max_pixels=1_000_000))


def test_a_mode_that_does_not_convert_is_refused() -> None:
    cmyk = png(Image.new("CMYK", (4, 4)), "JPEG")
    with pytest.raises(ImageError, match="CMYK image; send a grayscale or RGB"):
        image_rows(cmyk, ImageSpec(width=8, height=8))


def test_the_spec_file_is_checked() -> None:
    with pytest.raises(ValueError, match="mode"):
        ImageSpec.from_json({"width": 8, "height": 8, "mode": "CMYK"})
    with pytest.raises(ValueError, match="layout"):
        ImageSpec.from_json({"width": 8, "height": 8, "layout": "NCHW"})


# -- POST /predict over a real server -------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(create_app(InferenceSettings(cache_enabled=False))) as s:
        for _ in range(500):
            if httpx.get(f"{s.http_url}/readyz").status_code == 200:
                break
        yield s


@pytest.mark.parametrize("digit", range(10))
def test_the_sample_digits_are_classified(srv: RunningServer, digit: int) -> None:
    path = SAMPLES / f"{NAMES[digit]}.png"
    r = httpx.post(
        f"{srv.http_url}/predict", files={"file": (path.name, path.read_bytes(), "image/png")}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"] == digit
    assert body["model"] == "digits"
    assert 0 < body["confidence"] <= 1


def test_a_digit_drawn_small_on_a_large_page_is_classified(srv: RunningServer) -> None:
    # A pen stroke on a 280x280 canvas, as the page draws one: a "1".
    page = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(page).line([(140, 60), (140, 220)], fill=(0, 0, 0, 255), width=16)
    r = httpx.post(f"{srv.http_url}/predict", files={"file": ("one.png", png(page), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == 1


def test_a_jpeg_upload_is_classified(srv: RunningServer) -> None:
    seven = Image.open(SAMPLES / "seven.png").convert("RGB")
    r = httpx.post(
        f"{srv.http_url}/predict",
        files={"file": ("seven.jpg", png(seven, "JPEG"), "image/jpeg")},
    )
    assert (r.status_code, r.json()["prediction"]) == (200, 7)


@pytest.mark.parametrize(
    ("data", "content_type", "words"),
    [
        (b"this is text", "image/png", "not a PNG or JPEG image"),
        (png(Image.new("L", (4100, 4100), 255)), "image/png", "4100x4100 pixels; the limit"),
        (png(Image.new("CMYK", (8, 8)), "JPEG"), "image/jpeg", "CMYK image"),
    ],
)
def test_bad_images_get_422_saying_so(
    srv: RunningServer, data: bytes, content_type: str, words: str
) -> None:
    r = httpx.post(f"{srv.http_url}/predict", files={"file": ("x", data, content_type)})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert words in detail, detail
    assert json.dumps(r.json()).count("Traceback") == 0
