"""Image tensors <-> PIL images and labelled grids (no HTTP, no training code)."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor


def load_square(source: str | os.PathLike[str] | Image.Image, size: int) -> np.ndarray:
    """Decode (if needed), centre-crop to a square and resize to ``size``: HxWx3 uint8 RGB."""
    img = source if isinstance(source, Image.Image) else Image.open(source)
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def to_pil(image: Tensor) -> Image.Image:
    """(3, S, S) in [0, 1] -> RGB PIL image."""
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def from_pil(image: Image.Image) -> Tensor:
    """RGB PIL image -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def grid(images: Tensor, columns: int, padding: int = 2, scale: int = 1) -> Image.Image:
    """(n, 3, S, S) -> one PIL image with ``columns`` images per row, upscaled ``scale``x (nearest)."""
    n, _, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (w + padding) + padding, rows * (h + padding) + padding), "white")
    for i in range(n):
        r, c = divmod(i, columns)
        canvas.paste(to_pil(images[i]), (padding + c * (w + padding), padding + r * (h + padding)))
    if scale > 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.Resampling.NEAREST)
    return canvas


def labelled_rows(
    images: Tensor, labels: list[str], columns: int, scale: int = 1, label_width: int = 150
) -> Image.Image:
    """A grid with one text label at the start of each row (e.g. a breed per row)."""
    body = grid(images, columns, scale=scale)
    canvas = Image.new("RGB", (body.width + label_width, body.height), "white")
    canvas.paste(body, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = body.height / max(1, len(labels))
    for i, label in enumerate(labels):
        draw.text((4, int(i * row_height + row_height / 2) - 5), label, fill="black")
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def at_side(images: Tensor, side: int) -> Tensor:
    """Images (n, 3, H, W) resized to ``side`` x ``side`` (antialiased bicubic, like the data's decoding)."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
