"""Every way an upload can be wrong is a clear 4xx; odd but valid photos are accepted."""

import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.app.conftest import image_bytes

ENDPOINTS = ["/identify", "/encode"]


def post(client: TestClient, endpoint: str, data: bytes, name: str = "dog.png"):
    return client.post(endpoint, files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_zero_bytes(client: TestClient, endpoint: str) -> None:
    response = post(client, endpoint, b"")
    assert response.status_code == 400 and "empty" in response.json()["detail"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_not_an_image(client: TestClient, endpoint: str) -> None:
    response = post(client, endpoint, b"this is a text file, not a dog", "dog.txt")
    assert (
        response.status_code == 415
        and "not an image in a format the service reads (JPEG, PNG or WebP)" in response.json()["detail"]
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_truncated_image(client: TestClient, endpoint: str) -> None:
    data = image_bytes(size=(200, 200), fmt="JPEG")
    response = post(client, endpoint, data[: len(data) // 2], "dog.jpg")
    assert response.status_code == 400 and "truncated" in response.json()["detail"]


def test_upload_over_the_size_limit(client: TestClient) -> None:
    response = post(client, "/identify", b"\xff" * 200_001)
    assert response.status_code == 413 and "200,000-byte limit" in response.json()["detail"]


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    response = post(client, "/identify", bomb)
    assert response.status_code == 413 and "pixel" in response.json()["detail"]


def test_missing_file_field(client: TestClient) -> None:
    assert client.post("/identify").status_code == 422


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGB", "WEBP")])
def test_other_modes_are_converted(client: TestClient, mode: str, fmt: str) -> None:
    response = post(client, "/identify", image_bytes(mode=mode, fmt=fmt))
    assert response.status_code == 200, response.text
    assert len(response.json()["breeds"]) == 3


def test_exif_rotation_is_applied(client: TestClient) -> None:
    """A portrait photo stored sideways with EXIF orientation 6 encodes like the upright one."""
    upright = Image.new("RGB", (40, 80), (20, 20, 20))
    upright.paste((240, 240, 240), (0, 0, 40, 40))  # white top half
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored, plain = io.BytesIO(), io.BytesIO()
    sideways.save(stored, format="JPEG", exif=exif, quality=95)
    upright.save(plain, format="JPEG", quality=95)
    a = post(client, "/encode", stored.getvalue(), "a.jpg").json()["mean"]
    b = post(client, "/encode", plain.getvalue(), "b.jpg").json()["mean"]
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.15


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP", "TGA", "PCX", "ICO"])
def test_formats_other_than_jpeg_png_webp_are_refused(client: TestClient, fmt: str) -> None:
    response = post(client, "/identify", image_bytes(fmt=fmt, size=(64, 64)), f"dog.{fmt.lower()}")
    assert response.status_code == 415, response.text
    assert "JPEG, PNG or WebP" in response.json()["detail"]


def test_a_16_bit_photo_is_scaled_not_clipped(client: TestClient) -> None:
    """A 16-bit grey PNG encodes like the same photo in 8 bits (before: every pixel above 255/65535 became white)."""
    import numpy as np

    eight = (np.arange(64 * 64).reshape(64, 64) % 200 + 20).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    files = []
    for array in (eight, sixteen):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    assert Image.open(io.BytesIO(files[1])).mode.startswith("I;16")
    a, b = (post(client, "/encode", data).json()["mean"] for data in files)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4


def test_a_bomb_beyond_pillows_own_limit_is_told_the_services_limit(client: TestClient) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)  # 400 Mpx: Pillow refuses it in Image.open
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    response = post(client, "/identify", bomb)
    assert response.status_code == 413
    assert "40,000,000-pixel limit" in response.json()["detail"], response.json()["detail"]
    assert "178,956,970" not in response.json()["detail"]


def test_exactly_one_file_part(client: TestClient) -> None:
    photo = image_bytes()
    two = [("file", ("a.png", photo, "image/png")), ("file", ("b.png", photo, "image/png"))]
    response = client.post("/identify", files=two)
    assert response.status_code == 422 and "exactly one 'file' part, got 2" in response.json()["detail"]


def test_errors_say_what_to_fix_without_naming_internals(client: TestClient) -> None:
    from PIL.PngImagePlugin import PngInfo

    metadata = PngInfo()
    metadata.add_text("comment", "a" * 2_000_000, zip=True)  # a few kB compressed, 2 MB to Pillow
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (170, 110, 40)).save(buffer, format="PNG", pnginfo=metadata)
    answer = post(client, "/identify", buffer.getvalue())
    assert answer.status_code == 400 and "metadata" in answer.json()["detail"]
    assert "MAX_TEXT_CHUNK" not in answer.text and "Plugin" not in answer.text
    as_text = client.post("/identify", data={"file": "not a file"})
    assert as_text.status_code == 422 and "uploaded file" in as_text.text
    assert "UploadFile" not in as_text.text and "<class" not in as_text.text
