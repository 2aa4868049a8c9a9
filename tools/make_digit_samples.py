"""Write a few sample digit images, examples/digits/<name>.png, from
scikit-learn's bundled digits data (shipped inside the package: nothing is
downloaded), as a person would draw them: dark ink on white paper, 8x8
scaled up to 128x128.

They come from the test split tools/make_models.py holds out (same seed and
fraction), so the bundled model never saw them. Run with a Python that has
scikit-learn and Pillow (the ``models`` extra plus Pillow)::

    python tools/make_digit_samples.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "digits"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SCALE = 16  # 8x8 -> 128x128


def _split_settings() -> tuple[int, float]:
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "tools" / "make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DIGITS_SEED, module.DIGITS_TEST_FRACTION


def main() -> None:
    seed, fraction = _split_settings()
    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    OUT.mkdir(parents=True, exist_ok=True)
    for digit, name in enumerate(NAMES):
        pixels = x_test[np.flatnonzero(y_test == digit)[0]].reshape(8, 8)
        # 0..16 ink to 8-bit gray: 16 is black ink, 0 white paper.
        gray = (255 - np.round(pixels * 255 / 16)).astype(np.uint8)
        image = Image.fromarray(gray, mode="L").resize((8 * SCALE, 8 * SCALE), Image.NEAREST)
        target = OUT / f"{name}.png"
        image.save(target, optimize=True)
        print(f"{target.relative_to(ROOT)}: the test split's first {digit}")


if __name__ == "__main__":
    main()
