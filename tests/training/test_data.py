from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import BREED_COLOURS, write_folders, write_kaggle, write_stanford
from training.data import (
    DataLayoutError,
    SplitRecipe,
    augment,
    balanced_indices,
    find_photos,
    load_images,
    near_duplicates,
    split_ids,
    without_duplicates,
)


def test_folder_per_breed_layout(tmp_path: Path) -> None:
    photos = find_photos(write_folders(tmp_path, per_breed=4))
    assert photos.layout == "folders"
    assert photos.breeds == sorted(BREED_COLOURS)
    assert photos.counts() == {b: 4 for b in sorted(BREED_COLOURS)}


def test_folder_layout_also_accepts_the_images_folder_itself(tmp_path: Path) -> None:
    write_folders(tmp_path, per_breed=2)
    assert find_photos(tmp_path / "images").breeds == sorted(BREED_COLOURS)


def test_kaggle_layout_reads_labels_csv(tmp_path: Path) -> None:
    photos = find_photos(write_kaggle(tmp_path, per_breed=3))
    assert photos.layout == "kaggle"
    assert photos.counts() == {b: 3 for b in sorted(BREED_COLOURS)}
    assert all(p.path.parent.name == "train" and p.path.stem == p.id for p in photos.photos)


def test_kaggle_rows_without_an_image_are_skipped(tmp_path: Path) -> None:
    write_kaggle(tmp_path, per_breed=2)
    with open(tmp_path / "labels.csv", "a") as f:
        f.write("does-not-exist,beagle\n")
    assert len(find_photos(tmp_path).photos) == 6


def test_stanford_layout_lower_cases_breed_after_synset(tmp_path: Path) -> None:
    photos = find_photos(write_stanford(tmp_path, per_breed=2))
    assert photos.layout == "stanford"
    assert photos.breeds == ["beagle", "gordon_setter", "samoyed"]
    assert find_photos(tmp_path / "Images").breeds == photos.breeds


def test_unknown_layout_names_the_expected_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(DataLayoutError) as err:
        find_photos(tmp_path)
    message = str(err.value)
    assert "Kaggle" in message and "Stanford" in message and "images/<breed>" in message


def test_missing_path_is_a_layout_error(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="is not a folder"):
        find_photos(tmp_path / "nowhere")


def test_split_is_deterministic_stratified_and_disjoint(tmp_path: Path) -> None:
    photos = find_photos(write_folders(tmp_path, per_breed=20))
    recipe = SplitRecipe(seed=3, validation_fraction=0.25, min_validation=0)
    train, val = split_ids(photos, recipe)
    assert (train, val) == split_ids(photos, recipe)
    assert not set(train) & set(val)
    assert len(train) + len(val) == 60
    breed_of = {p.id: p.breed for p in photos.photos}
    assert sorted(breed_of[i] for i in val) == sorted([b for b in BREED_COLOURS for _ in range(5)])
    assert split_ids(photos, SplitRecipe(seed=4, validation_fraction=0.25, min_validation=0))[1] != val


def test_split_holds_out_a_minimum_per_breed_and_leaves_one_to_train(tmp_path: Path) -> None:
    photos = find_photos(write_folders(tmp_path, per_breed=12))
    breed_of = {p.id: p.breed for p in photos.photos}
    _, val = split_ids(photos, SplitRecipe())  # 10 % of 12 is 2, the minimum 10
    assert sorted(breed_of[i] for i in val) == sorted([b for b in BREED_COLOURS for _ in range(10)])
    _, val = split_ids(photos, SplitRecipe(min_validation=50))
    assert len(val) == 3 * 11  # never the last photo of a breed


def test_several_roots_are_read_together_in_their_own_layouts(tmp_path: Path) -> None:
    photos = find_photos(
        [write_kaggle(tmp_path / "kaggle", per_breed=3), write_folders(tmp_path / "dogs", per_breed=2)]
    )
    assert photos.layout == "kaggle+folders" and len(photos.photos) == 15
    assert photos.roots == (tmp_path / "kaggle", tmp_path / "dogs")
    write_folders(tmp_path / "again", per_breed=2)
    with pytest.raises(DataLayoutError, match="is under both"):
        find_photos([tmp_path / "dogs", tmp_path / "again"])


def test_duplicates_across_roots_are_dropped_before_the_split(tmp_path: Path) -> None:
    """The same photos re-encoded at another size in a second root are found and dropped, the first root's copy kept;
    different photos are not."""
    from PIL import Image

    kaggle = write_kaggle(tmp_path / "kaggle", per_breed=4)
    first = find_photos(kaggle)
    copies = tmp_path / "dogs" / "images"
    for photo in first.photos[:5]:
        (copies / photo.breed).mkdir(parents=True, exist_ok=True)
        with Image.open(photo.path) as img:
            img.resize((img.width * 2, img.height * 2)).save(copies / photo.breed / f"copy_{photo.id}.jpg", quality=80)
    write_folders(tmp_path / "other", per_breed=3, seed=7)
    photos = find_photos([kaggle, tmp_path / "dogs", tmp_path / "other"])
    kept, dropped = without_duplicates(photos, tmp_path / "cache")
    assert sorted(dropped) == sorted(f"copy_{p.id}" for p in first.photos[:5])
    assert len(kept.photos) == len(photos.photos) - 5
    train, val = split_ids(kept, SplitRecipe(min_validation=1))
    assert not set(dropped) & (set(train) | set(val))


def test_near_duplicates_keep_the_first_copy() -> None:
    hashes = np.array([0b1111, 0b1110, 2**63, 0b1111 | 2**40], dtype=np.uint64)
    assert near_duplicates(hashes, max_bits=1) == [1, 3]
    assert near_duplicates(hashes, max_bits=0) == []


def test_split_ignores_listing_order(tmp_path: Path) -> None:
    photos = find_photos(write_folders(tmp_path, per_breed=10))
    shuffled = type(photos)(photos.roots, photos.layout, list(reversed(photos.photos)))
    assert split_ids(photos, SplitRecipe()) == split_ids(shuffled, SplitRecipe())


def test_load_images_resizes_and_reuses_the_cache(tmp_path: Path) -> None:
    photos = find_photos(write_folders(tmp_path / "data", per_breed=3))
    first = load_images(photos, 32, tmp_path / "cache", workers=1)
    assert first.pixels.shape == (9, 32, 32, 3) and first.pixels.dtype == np.uint8
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    second = load_images(photos, 32, tmp_path / "cache", workers=1)
    assert np.array_equal(first.pixels, second.pixels)
    assert load_images(photos, 16, tmp_path / "cache", workers=1).pixels.shape[1] == 16


def test_augment_keeps_shape_and_range() -> None:
    batch = torch.rand(5, 3, 16, 16)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, batch)


def test_balanced_indices_equalise_breeds() -> None:
    labels = torch.tensor([0] * 900 + [1] * 100)
    drawn = balanced_indices(labels, 20000, torch.Generator().manual_seed(0))
    share_small = (labels[drawn] == 1).float().mean().item()
    assert 0.45 < share_small < 0.55
