from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint, trunk
from training import crops
from training.data import find_photos, load_images
from training.prior import main as fit_prior
from training.prior import split_latents


def blob(rows: tuple[int, int], cols: tuple[int, int], size: int = 128) -> torch.Tensor:
    cam = torch.zeros(size, size)
    cam[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1.0
    return cam


def test_the_square_is_centred_on_the_dog_and_a_margin_wider() -> None:
    # An 80 x 80 dog centred at (60, 70): a square of 80 * 1.15 = 92 around that centre.
    assert crops.square_around(blob((20, 99), (30, 109))) == (14, 24, 92)


def test_the_square_is_never_a_closer_zoom_than_half_the_photo_and_stays_inside_it() -> None:
    top, left, side = crops.square_around(blob((10, 29), (40, 59)))  # a 20-px dog near the top edge
    assert side == 64 and top == 0 and left == 18
    top, left, side = crops.square_around(blob((0, 127), (100, 127)))  # a tall dog at the right edge
    assert side == 128 and (top, left) == (0, 0)


def test_where_the_trunk_sees_no_dog_the_whole_photo_is_kept() -> None:
    assert crops.square_around(torch.zeros(128, 128)) == (0, 0, 128)
    assert crops.square_around(-torch.ones(128, 128)) == (0, 0, 128)


def test_cut_resizes_the_square_to_the_training_size() -> None:
    photo = np.zeros((1, 128, 128, 3), np.uint8)
    photo[0, 32:96, 32:96] = (200, 100, 50)  # a square dog in the middle, black around it
    out = crops.cut(photo, np.array([[32, 32, 64]]), 32)
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    assert (np.abs(out[0].astype(int) - (200, 100, 50)) <= 1).all()  # only the dog is left


def test_the_trunk_finds_a_box_inside_every_photo(folders_data: Path) -> None:
    photos = load_images(find_photos(folders_data), crops.SOURCE_SIZE)
    boxes = crops.dog_boxes(trunk.load_trunk(), photos.pixels[:10], torch.device("cpu"), progress=False)
    top, left, side = boxes.T
    assert boxes.shape == (10, 3) and (side >= crops.MIN_SIDE * crops.SOURCE_SIZE).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + side <= 128).all() and (left + side <= 128).all()
    figure = crops.crop_figure(photos, np.tile(boxes[:1], (len(photos.ids), 1)), count=6, seed=0)
    assert figure.size == (4 * (2 * 128 + 8), 2 * (128 + 8))


def test_the_prior_trains_on_the_dogs_squares(
    tmp_path: Path, tiny_checkpoint: Path, folders_data: Path, cache_dir: Path
) -> None:
    model, card = checkpoint.load(tiny_checkpoint)
    device = torch.device("cpu")
    with torch.no_grad():
        whole = split_latents(model, card, [folders_data], cache_dir, device, mirrored=False)
        cropped = split_latents(model, card, [folders_data], cache_dir, device, mirrored=False, dog_crops=True)
    assert torch.equal(whole[1], cropped[1]) and whole[0].shape == cropped[0].shape  # the same photos, in order
    zoomed = crops.cached_boxes(load_images(find_photos(folders_data), 128, cache_dir), device, cache_dir)[:, 2] < 128
    assert zoomed.any() and not torch.equal(whole[0], cropped[0])
    out = tmp_path / "cropped"
    fit_prior(
        ["--init-from", str(tiny_checkpoint), "--data", str(folders_data), "--out", str(out), "--dog-crops"]
        + ["--steps", "4", "--batch-size", "8", "--channels", "8", "--blocks", "1", "--log-every", "2"]
        + ["--cache-dir", str(cache_dir), "--no-progress"]
    )
    assert checkpoint.read_card(out)["stages"][-1]["args"]["dog_crops"] is True


@pytest.mark.parametrize("bad", [["--count", "0"]])
def test_the_figure_command_refuses_nonsense(bad: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        crops.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), *bad])
