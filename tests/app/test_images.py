"""app/images.py without HTTP: what an upload is decoded to."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from app.images import decode_photo


def jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 64, width // 64, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's draft mode: a 4096x3072 JPEG for a 64-px model is decoded at 1/8 scale (512x384), not in full."""
    sizes: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self):  # type: ignore[no-untyped-def]
        result = load(self)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    data = jpeg(4096, 3072)
    reduced = decode_photo(data, 40_000_000, 64)
    assert sizes[0] == (512, 384)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    full = Image.open(io.BytesIO(data)).convert("RGB")  # the same photo decoded in full, then cropped and resized
    from app.images import from_pil, load_square

    reference = from_pil(Image.fromarray(load_square(full, 64)))
    assert reduced.shape == (1, 3, 64, 64)
    assert float((reduced[0] - reference).abs().mean()) < 0.02


def test_a_small_jpeg_keeps_its_size() -> None:
    data = jpeg(128, 96)
    assert decode_photo(data, 40_000_000, 64).shape == (1, 3, 64, 64)
