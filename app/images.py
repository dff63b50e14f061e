"""Uploads in, PNGs out: every way an upload can be wrong becomes a clear 4xx."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from fastapi import HTTPException, UploadFile
from fastapi.responses import Response
from PIL import Image, ImageOps, UnidentifiedImageError

from model.imaging import from_pil, grid, load_square, png_bytes

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
ACCEPTED = "a JPEG, PNG or WebP photo"


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` (+1 to detect overflow) of an upload."""
    data = await file.read(max_bytes + 1)
    if not data:
        raise HTTPException(400, detail=f"the uploaded file is empty (0 bytes); send {ACCEPTED} of a dog")
    if len(data) > max_bytes:
        raise HTTPException(413, detail=f"the upload is larger than the {max_bytes:,}-byte limit; send a smaller photo")
    return data


def decode_photo(data: bytes, max_pixels: int, size: int) -> torch.Tensor:
    """Bytes of a JPEG, PNG or WebP -> (1, 3, size, size) in [0, 1].

    Greyscale, 16-bit, palette, RGBA, CMYK and EXIF-rotated photos are converted; a large JPEG is decoded at a
    reduced scale (Pillow's draft mode: the DCT skips what the model would throw away), so its cost and memory do
    not grow with its pixel count.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            # The header gives the size before any pixel is decoded: refuse bombs here.
            if img.width * img.height > max_pixels:
                raise HTTPException(
                    413,
                    detail=f"the image is {img.width}x{img.height} = {img.width * img.height:,} pixels, more than "
                    f"the {max_pixels:,}-pixel limit; send a smaller photo",
                )
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # at least size x size: the centre crop below still has its side
            img.load()
    except HTTPException:
        raise
    except UnidentifiedImageError as err:
        raise HTTPException(
            415,
            detail="the upload is not an image in a format the service reads (JPEG, PNG or WebP), or its header is "
            f"damaged; send {ACCEPTED}",
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's own, larger limit
        raise HTTPException(
            413, detail=f"the image has more pixels than the {max_pixels:,}-pixel limit; send a smaller photo"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data; Pillow's words name its internals
        if "MAX_TEXT_CHUNK" in str(err):
            raise HTTPException(
                400, detail="the PNG carries a text (metadata) chunk too large to read; re-save the photo without it"
            ) from err
        raise HTTPException(400, detail="the image is truncated or corrupt; send the complete file") from err
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grey PNG: scale to 8 bits, do not clip
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    array = load_square(img.convert("RGB"), size)
    return from_pil(Image.fromarray(array)).unsqueeze(0)


def png_image(images: torch.Tensor, scale: int = 1, columns: int | None = None) -> bytes:
    """A PNG of one image, or of a grid (square-ish unless ``columns`` is given)."""
    if columns is None:
        columns = max(1, int(round(images.shape[0] ** 0.5)))
        if images.shape[0] > columns * columns:
            columns += 1
    return png_bytes(grid(images, columns, padding=2 if images.shape[0] > 1 else 0, scale=scale))


def gif_image(frames: torch.Tensor, scale: int = 1, frame_ms: int = 120) -> bytes:
    """An endlessly looping animated GIF that plays forward then back."""
    images = [grid(frame[None], 1, padding=0, scale=scale) for frame in frames]
    images = images + images[-2:0:-1]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def png_response(data: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(data, media_type="image/png", headers=headers)


def gif_response(data: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(data, media_type="image/gif", headers=headers)
