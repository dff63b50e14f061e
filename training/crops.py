"""Dog-centred crops of real photos: where in each photo the dog is, by the pretrained trunk's class activation map
(Zhou et al. 2016) of ImageNet's dog classes, and the square around it at the training size.

Many photos show a small dog among people, fences and furniture; the 2019 Kaggle "Generative Dog Images" winners
trained on the dogs' boxes. Here the boxes come from the trunk looking at real photos only (the project's rule: it
never scores a generated dog). A crop is never smaller than half the photo's side, so at 64 px it is at most a 2x zoom
of the 128-px photo and no blurrier than the rest.

    python -m training.crops --data ../shared/kaggle-dog-breed-identification ../shared/dogs --out runs/crops

writes ``crops.png`` (photos with their boxes beside their crops) to look at before training on them
(``training.prior --dog-crops``). The boxes are cached by photo list and settings (about 10 min on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm import tqdm

from model import trunk
from model.imaging import at_side
from training.common import resolve_device, set_threads
from training.data import DogPhotos, ImageArray, default_cache_dir, find_photos, load_images, to_tensor

SOURCE_SIZE = 128  # the photos' shorter side: boxes are found and cut at full resolution
RESOLUTION = 224  # the trunk's native side: a 7 x 7 activation map
THRESHOLD = 0.3  # the share of the map's peak that counts as dog (Zhou et al. used 0.2 for whole objects)
MARGIN = 0.15  # the square is this much wider than the box: ears and tails reach past the map's peak
MIN_SIDE = 0.5  # of the photo's side: at most a 2x zoom
BATCH = 8  # the trunk runs fastest per image in small batches on a CPU


def square_around(cam: torch.Tensor) -> tuple[int, int, int]:
    """(top, left, side) of the square, inside an S x S photo, around where ``cam`` (S, S) is at least ``THRESHOLD``
    of its peak, ``MARGIN`` wider and at least ``MIN_SIDE`` of the photo; the whole photo where nothing is a dog."""
    size = cam.shape[-1]
    peak = float(cam.max())
    if peak <= 0:
        return 0, 0, size
    rows, cols = (cam >= THRESHOLD * peak).nonzero(as_tuple=True)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    side = round(max(y1 - y0 + 1, x1 - x0 + 1) * (1 + MARGIN))
    side = min(size, max(round(MIN_SIDE * size), side))
    top = min(max(round((y0 + y1 + 1) / 2 - side / 2), 0), size - side)
    left = min(max(round((x0 + x1 + 1) / 2 - side / 2), 0), size - side)
    return top, left, side


@torch.inference_mode()
def dog_boxes(
    backbone: trunk.EfficientNetLite0, pixels: np.ndarray, device: torch.device, progress: bool = True
) -> np.ndarray:
    """(N, 3) int32 (top, left, side) of the dog's square in each of (N, S, S, 3) uint8 photos: the activation map of
    the dog classes the trunk sees in the photo, each weighted by its probability among them."""
    size = pixels.shape[1]
    dog_weights = backbone._fc.weight[list(trunk.DOG_CLASSES)]  # (dog classes, 1280)
    boxes = np.empty((len(pixels), 3), np.int32)
    for i in tqdm(range(0, len(pixels), BATCH), desc="finding the dogs", disable=not progress, mininterval=5):
        fmap = backbone.feature_map(at_side(to_tensor(pixels[i : i + BATCH]), RESOLUTION).to(device))
        which = backbone.classify(fmap.mean((2, 3)))[:, list(trunk.DOG_CLASSES)].softmax(-1)
        cam = torch.einsum("bc,cf,bfhw->bhw", which, dog_weights, fmap)
        cam = F.interpolate(cam[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        boxes[i : i + BATCH] = [square_around(c) for c in cam.cpu()]
    return boxes


def cached_boxes(photos: ImageArray, device: torch.device, cache_dir: Path | None = None) -> np.ndarray:
    """:func:`dog_boxes` of every photo, cached by the trunk's weights, the settings and the photo ids."""
    spec = f"{trunk.WEIGHTS_SHA256}|{RESOLUTION}|{THRESHOLD}|{MARGIN}|{MIN_SIDE}|{photos.pixels.shape}|"
    key = hashlib.sha256((spec + "\n".join(photos.ids)).encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / "boxes" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    boxes = dog_boxes(trunk.load_trunk().to(device), photos.pixels, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, boxes)
    os.replace(tmp, path)
    return boxes


def cut(pixels: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each photo's square cut out and resized to ``side`` px: (N, side, side, 3) uint8."""
    out = np.empty((len(pixels), side, side, 3), np.uint8)
    for n, (top, left, size) in enumerate(boxes):
        crop = to_tensor(pixels[n : n + 1, top : top + size, left : left + size])
        out[n] = at_side(crop, side)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    return out


def dog_centred(photos: DogPhotos, side: int, device: torch.device, cache_dir: Path | None = None) -> ImageArray:
    """Every photo cut to the square around its dog at ``side`` px, in the order of ``load_images``."""
    full = load_images(photos, SOURCE_SIZE, cache_dir)
    return ImageArray(full.ids, full.breeds, cut(full.pixels, cached_boxes(full, device, cache_dir), side))


def crop_figure(photos: ImageArray, boxes: np.ndarray, count: int, seed: int, side: int = 64) -> Image.Image:
    """``count`` random photos, each with its box drawn, beside its crop at ``side`` px (shown at the photo's size)."""
    rows = random.Random(seed).sample(range(len(photos.ids)), count)
    size = photos.pixels.shape[1]
    columns = 4
    sheet = Image.new("RGB", (columns * (2 * size + 8), -(-count // columns) * (size + 8)), "white")
    for k, row in enumerate(rows):
        photo = Image.fromarray(photos.pixels[row])
        top, left, box = (int(v) for v in boxes[row])
        ImageDraw.Draw(photo).rectangle([left, top, left + box - 1, top + box - 1], outline=(255, 0, 0), width=2)
        crop = Image.fromarray(cut(photos.pixels[row : row + 1], boxes[row : row + 1], side)[0]).resize((size, size))
        x, y = (k % columns) * (2 * size + 8), (k // columns) * (size + 8)
        sheet.paste(photo, (x, y))
        sheet.paste(crop, (x + size, y))
    return sheet


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="the data folders")
    p.add_argument("--out", type=Path, required=True, help="folder for crops.png")
    p.add_argument("--count", type=int, default=48, help="photos in the figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be positive")
    set_threads(args.threads)
    device = resolve_device(args.device)
    photos = load_images(find_photos(args.data), SOURCE_SIZE, args.cache_dir)
    boxes = cached_boxes(photos, device, args.cache_dir)
    share = boxes[:, 2] / SOURCE_SIZE
    print(
        f"{len(boxes)} photos: the dog's square is {share.mean():.2f} of the photo's side on average; "
        f"{(share >= 1).mean():.1%} keep the whole photo, {(share <= MIN_SIDE).mean():.1%} are the closest zoom"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "crops.png"
    crop_figure(photos, boxes, min(args.count, len(boxes)), args.seed).save(path)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
