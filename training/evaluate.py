"""Evaluate a checkpoint on its recorded held-out split.

    python -m training.evaluate checkpoints/dogs64 --data ../shared/dogs

Writes ``<out>/metrics.json`` (default ``<checkpoint>/eval``) and these figures, all of generated images
or statistics only (never the source photos): ``confusion.png``, ``latent_map.png``, ``samples.png``
(one row per breed), ``mixes.png`` (every pairwise 50/50 mix of up to ``MIX_GRID_BREEDS`` breeds, pure breeds on the
diagonal: all of a small model's, else the README's eight and evenly spaced others). The metrics
are also written into the checkpoint card under ``evaluation`` unless ``--no-update-card``.

Only the FID of prior samples at other sampler settings or temperatures (one JSON line per combination; every
field of ``model.sampler.SamplerSettings`` can be swept, the others stay the checkpoint's):

    python -m training.evaluate checkpoints/dogs64 --data ../shared/dogs --sweep guidance=4,5 eta=0,1 temperature=1,0.9

Metrics: negative ELBO in bits per dimension (one z sample per photo, pixels discretised to 8 bits),
reconstruction MSE and PSNR, breed identification (``training/identification.py``: top-1/top-5 and per breed on
the held-out split, on ImageNet-validation photos apart, calibration with ``reliability.png``, "is it a dog" flags,
the VAE's own head beside the identifier, and the top-1 on held-out photos shown at the samples' size and after the
autoencoder, how much of a breed the decoder gives back), the share
of the model's own samples in which the identifier (and the VAE's head) names the breed asked for, ancestry (as
served, and by the latent beside it) on the model's own 70/30 mixes and on held-out photos (the photo's own breed
first), and FID of prior samples (balanced over breeds) against held-out photos, with a real-vs-real floor (held-out
vs as many training photos) for scale, and the FID of those training photos' reconstructions: the bound the decoder
sets, which no prior can beat.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.imaging import labelled_rows
from model.prior import DogModel
from model.sampler import SamplerSettings
from training.common import settings_grid
from training.data import find_photos, held_out_photos, load_images, to_tensor
from training.fid import (
    FID,
    REFERENCES,
    balanced_samples,
    fid_sweep,
    held_out_reference,
    recognised_share,
    reconstruction_fid,
    training_reference,
)
from training.identification import (
    PHOTO_SIZE,
    at_sample_size,
    identification_report,
    of_reconstructions,
    plot_reliability,
)
from training.identifier import IMAGENET_VAL_PREFIX
from training.losses import LossWeights, held_out_metrics


def plot_confusion(confusion: np.ndarray, breeds: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(11, 10))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(breeds)), breeds, rotation=90, fontsize=7)
    ax.set_yticks(range(len(breeds)), breeds, fontsize=7)
    ax.set_xlabel("predicted breed")
    ax.set_ylabel("true breed (held-out photos)")
    ax.set_title("Breed identification, row-normalised confusion")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latent_map(model: DogModel, means: torch.Tensor, labels: torch.Tensor, breeds: list[str], path: Path) -> None:
    """PCA of held-out posterior means, coloured by breed, with each breed's prior mean labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = means.mean(0)
    _, _, v = torch.pca_lowrank(means - centre, q=2, center=False)
    xy = ((means - centre) @ v).numpy()
    prior_xy = ((model.vae.prior_mean.cpu() - centre) @ v).numpy()
    cmap = plt.get_cmap("tab20", len(breeds))
    fig, ax = plt.subplots(figsize=(11, 9))
    for i, b in enumerate(breeds):
        rows = (labels == i).numpy()
        ax.scatter(xy[rows, 0], xy[rows, 1], s=6, color=cmap(i), alpha=0.5, label=b)
        ax.annotate(b, prior_xy[i], fontsize=7, weight="bold", color=cmap(i))
    ax.set_title("Latent z of held-out photos (PCA of posterior means); names at each breed's prior mean")
    ax.legend(fontsize=6, markerscale=2, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MIX_GRID_BREEDS = 16  # 120 breeds would be 14,400 mixes and a 7,700-pixel square
FIGURE_BREEDS = (
    "miniature_pinscher", "doberman", "basenji", "golden_retriever", "samoyed", "beagle", "pug", "siberian_husky",
)  # fmt: skip


def mix_grid_breeds(breeds: list[str], most: int = MIX_GRID_BREEDS) -> list[int]:
    """Indices of the breeds in the pairwise-mix figure: all of them, or ``FIGURE_BREEDS`` and evenly spaced others."""
    if len(breeds) <= most:
        return list(range(len(breeds)))
    chosen = [breeds.index(b) for b in FIGURE_BREEDS if b in breeds][:most]
    others = [i for i in range(len(breeds)) if i not in chosen]
    room = most - len(chosen)
    return sorted(chosen + [others[k * len(others) // room] for k in range(room)])


def pairwise_mixes(model: DogModel, chosen: list[int], seed: int) -> torch.Tensor:
    """(m*m, 3, S, S) for the m breed indices ``chosen``: cell (i, j) is the 50/50 mix of the i-th and j-th, all with
    the same noise."""
    n, m = model.n_breeds, len(chosen)
    eye = torch.eye(n)[chosen]
    weights = ((eye[:, None, :] + eye[None, :, :]) / 2).reshape(m * m, n)
    eps = latent_ops.noise(1, latent_ops.noise_dim(model), seed).expand(m * m, -1)
    images = [
        latent_ops.decode(
            model, latent_ops.prior_latents(model, weights[i : i + 256], eps[i : i + 256]), weights[i : i + 256]
        )
        for i in range(0, m * m, 256)
    ]
    return torch.cat(images)


def breed_pairs(n_breeds: int, pairs: int, seed: int) -> torch.Tensor:
    """(pairs, 2) distinct random breed pairs (a, b), a != b, drawn with ``seed``; fewer when the breeds allow fewer."""
    generator = torch.Generator().manual_seed(seed)
    everyone = torch.combinations(torch.arange(n_breeds), 2)
    chosen = everyone[torch.randperm(len(everyone), generator=generator)[:pairs]]
    flip = torch.rand(len(chosen), generator=generator) < 0.5  # either parent may come first
    return torch.where(flip[:, None], chosen.flip(1), chosen)


def mix_grid_latents(
    model: DogModel, pairs: torch.Tensor, share: float, seeds: int, seed: int, sampling: SamplerSettings | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs for "``share`` of a, the rest b" of every pair, once per seed (seed .. seed + seeds - 1, the
    same noise for every pair): (pairs * seeds, latent_dim) latents and their weights."""
    n = model.n_breeds
    weights = torch.zeros(len(pairs), n)
    weights[torch.arange(len(pairs)), pairs[:, 0]] = share
    weights[torch.arange(len(pairs)), pairs[:, 1]] += 1 - share
    weights = weights.repeat_interleave(seeds, 0)
    dim = latent_ops.noise_dim(model, sampling)
    eps = torch.cat([latent_ops.noise(1, dim, seed + s) for s in range(seeds)]).repeat(len(pairs), 1)
    z = torch.cat(
        [
            latent_ops.prior_latents(model, weights[i : i + 64], eps[i : i + 64], sampling=sampling).cpu()
            for i in range(0, len(weights), 64)
        ]
    )
    return z, weights


def mix_fidelity(
    model: DogModel, pairs: int = 100, seeds: int = 4, seed: int = 0, sampling: SamplerSettings | None = None
) -> dict[str, Any]:
    """Whether mixes carry their parents, by the breed head's judgement of the mixed dogs: of 50/50 mixes of
    ``pairs`` random breed pairs x ``seeds`` seeds, the share with both parents among the head's top 3
    (``both_parents_top3``); of 70/30 mixes, the share in which it rates the 70 % parent above the 30 % one
    (``major_parent_first``). For scale, ``pure_parents_top3``: the share of those pairs and seeds whose two pure
    dogs, a's and b's from the same noise, each have their own breed among the head's top 3; a mix that showed
    both parents as plainly as their pure dogs do would score about that."""
    chosen = breed_pairs(model.n_breeds, pairs, seed)
    rows = torch.arange(len(chosen)).repeat_interleave(seeds)
    a, b = chosen[rows, 0], chosen[rows, 1]

    def judged(pairs_of: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's probabilities for "share of the first, the rest the second" of every pair, and its top 3."""
        z, weights = mix_grid_latents(model, pairs_of, share, seeds, seed, sampling)
        probs = torch.cat(
            [
                latent_ops.breed_probabilities(model, latent_ops.decode(model, z[i : i + 256], weights[i : i + 256]))
                for i in range(0, len(z), 256)
            ]
        )
        return probs, probs.topk(min(3, model.n_breeds), dim=1).indices

    def holds(top: torch.Tensor, breed: torch.Tensor) -> torch.Tensor:
        return (top == breed[:, None]).any(1)

    result: dict[str, Any] = {"pairs": len(chosen), "seeds": seeds}
    _, even = judged(chosen, 0.5)
    result["both_parents_top3"] = float((holds(even, a) & holds(even, b)).float().mean())
    probs, _ = judged(chosen, 0.7)
    dogs = torch.arange(len(probs))
    result["major_parent_first"] = float((probs[dogs, a] > probs[dogs, b]).float().mean())
    (_, pure_a), (_, pure_b) = judged(chosen, 1.0), judged(chosen.flip(1), 1.0)
    result["pure_parents_top3"] = float((holds(pure_a, a) & holds(pure_b, b)).float().mean())
    return result


def ancestry_of_photos(
    model: DogModel, photos: np.ndarray, breeds: torch.Tensor, by: str | None = None, seed: int = 0, n: int = 300
) -> float:
    """Ancestry (``by``) of ``n`` held-out real ``photos`` (their ``breeds``; pure-bred as far as their labels go),
    asked as uploads: the share whose heaviest breed is the photo's own. The real-photo check of an answer that the
    model's own mixes (:func:`ancestry_recovery`) can only check against the generator."""
    rows = torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    hits = sum(
        int(latent_ops.ancestry(model, to_tensor(photos[i : i + 1]), by=by).weights.argmax()) == int(breeds[i])
        for i in tqdm(rows, desc=f"ancestry by {by or 'default'} of held-out photos", mininterval=10)
    )
    return hits / len(rows)


def transfer_fidelity(
    model: DogModel, photos: np.ndarray, breeds: torch.Tensor, strength: float, seed: int = 0, n: int = 200
) -> dict[str, Any]:
    """Whether a transfer changes the breed: ``n`` of the held-out ``photos`` (their ``breeds``), each transferred
    (:func:`latent_ops.transfer` at ``strength``) to a random other breed; the share in which the identifier (the
    independent judge) and the VAE's own head name that breed first."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(photos), generator=generator)[:n]
    targets = (breeds[rows] + torch.randint(1, model.n_breeds, (len(rows),), generator=generator)) % model.n_breeds
    transferred = torch.cat(
        [
            latent_ops.transfer(model, to_tensor(photos[i : i + 1]), torch.eye(model.n_breeds)[t], strength, seed + i)
            for i, t in zip(rows.tolist(), targets.tolist(), strict=True)
        ]
    )
    return {
        "photos": len(rows),
        "strength": strength,
        "target_top1": recognised_share(model, transferred, targets),
        "target_top1_vae_head": recognised_share(model, transferred, targets, head="vae"),
    }


def mix_comparison(
    model: DogModel, breeds: list[str], candidates: list[SamplerSettings], pairs: int = 6, seed: int = 0
) -> Image.Image:
    """A figure of ``pairs`` random pairs: parent a, the 50/50 mix under each of ``candidates``, parent b (one seed
    for everything in a row; the parents are drawn under the first candidate)."""
    chosen = breed_pairs(model.n_breeds, pairs, seed)
    cells, labels = [], []
    for i, (a, b) in enumerate(chosen.tolist()):
        parents = latent_ops.decode(
            model, *mix_grid_latents(model, torch.tensor([[a, b], [b, a]]), 1.0, 1, seed + i, candidates[0])
        )
        mixes = [
            latent_ops.decode(model, *mix_grid_latents(model, torch.tensor([[a, b]]), 0.5, 1, seed + i, settings))
            for settings in candidates
        ]
        cells += [parents[:1], *mixes, parents[1:]]
        labels.append(f"{breeds[a]} + {breeds[b]}")
    return labelled_rows(torch.cat(cells), labels, columns=len(candidates) + 2, scale=2, label_width=260)


def ancestry_recovery(
    model: DogModel,
    seed: int,
    share: float = 0.7,
    max_breeds: int = 3,
    progress: bool = False,
    breeds: Iterable[int] | None = None,
    by: str | None = None,
) -> dict[str, float]:
    """How ancestry (``by``; default the served one) does on generated mixes: per breed b (``breeds``; default every
    one), one dog of "``share`` of b, the rest of the breed n/2 places on" (seed + b) asked of
    :func:`latent_ops.ancestry` as a photo. Returns the share of mixes whose largest weight is b (``top1``), whose
    answer contains b at all (``in_answer``), b's mean weight, and the mean seconds per ancestry call
    (``bench.ancestry`` reports these per share)."""
    n = model.n_breeds
    chosen = list(range(n) if breeds is None else breeds)
    top1 = found = 0
    weight_sum = seconds = 0.0
    for b in tqdm(chosen, desc=f"ancestry at share {share:g}", disable=not progress):
        weights = torch.zeros(n)
        weights[b] = share
        weights[(b + n // 2) % n] += 1 - share
        photo = latent_ops.mix(model, weights, seed=seed + b)
        started = time.perf_counter()
        answer = latent_ops.ancestry(model, photo, max_breeds=max_breeds, by=by).weights
        seconds += time.perf_counter() - started
        top1 += int(answer.argmax()) == b
        found += int(answer[b] > 0)
        weight_sum += float(answer[b])
    m = len(chosen)
    return {
        "share": share,
        "mixes": m,
        "top1": top1 / m,
        "in_answer": found / m,
        "mean_weight": weight_sum / m,
        "seconds_per_call": seconds / m,
    }


def evaluate(
    checkpoint_dir: Path,
    data: Path | list[Path],
    out: Path | None = None,
    fid_samples: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: Path | None = None,
    update_card: bool = True,
) -> dict[str, Any]:
    model, card = checkpoint.load(checkpoint_dir, device)
    out = Path(out) if out else Path(checkpoint_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    breeds = [b["name"] for b in card["breeds"]]
    breed_index = {b: i for i, b in enumerate(breeds)}
    photos = find_photos(data)
    image_size = model.vae.cfg.image_size
    images = load_images(photos, image_size, cache_dir)
    val = held_out_photos(card, images, data)
    val_ids = val.ids
    unknown = sorted(set(val.breeds) - set(breeds))
    if unknown:
        raise SystemExit(f"held-out photos have breeds the checkpoint does not know: {unknown}")
    labels = torch.tensor([breed_index[b] for b in val.breeds])
    dev = torch.device(device)

    print(f"evaluating {checkpoint_dir} on {len(val_ids)} held-out photos ({photos.layout} layout)", flush=True)
    metrics: dict[str, Any] = held_out_metrics(
        model.vae, LossWeights(**card.get("loss_weights", {})), val.pixels, labels, dev
    )
    photo_size = max(model.vae.cfg.head_size, PHOTO_SIZE)  # the breed heads read photos at their own side
    all_photos = images if photo_size == image_size else load_images(photos, photo_size, cache_dir)
    ident, reliability = identification_report(model, all_photos, val_ids, breeds)
    confusion = ident.pop("confusion")
    metrics.update(ident)
    held_out_large = held_out_photos(card, all_photos, data).pixels  # at the side the breed heads read
    metrics["identify_top1_at_sample_size"] = at_sample_size(model, held_out_large, labels, image_size)
    metrics["identify_top1_reconstructions"] = of_reconstructions(model, held_out_large, labels)
    plot_reliability(reliability, out / "reliability.png")
    # The same question answered in z alone, by Bayes' rule over the per-breed ex-post Gaussians.
    means = torch.cat(
        [latent_ops.posterior_mean(model, to_tensor(val.pixels[i : i + 256])) for i in range(0, len(val_ids), 256)]
    )
    latent_top = latent_ops.breeds_for_latent(model, means).topk(min(5, len(breeds)), dim=1).indices
    metrics["identify_from_latent_top1"] = float((latent_top[:, 0] == labels).float().mean())
    metrics["identify_from_latent_top5"] = float((latent_top == labels[:, None]).any(1).float().mean())
    plot_latent_map(model, means, labels, breeds, out / "latent_map.png")
    plot_confusion(confusion, breeds, out / "confusion.png")

    per_breed = torch.cat([latent_ops.sample(model, 8, breed=b, seed=seed + b) for b in range(len(breeds))])
    scale = 2 if len(breeds) <= 32 else 1  # 120 rows at twice the size would be a 15,000-pixel-tall figure
    labelled_rows(per_breed, breeds, columns=8, scale=scale, label_width=170).save(out / "samples.png")
    in_grid = mix_grid_breeds(breeds)
    labelled_rows(
        pairwise_mixes(model, in_grid, seed), [breeds[i] for i in in_grid], columns=len(in_grid), label_width=150
    ).save(out / "mixes.png")

    samples, sample_breeds = balanced_samples(model, max(fid_samples, len(breeds)), seed)
    # The identifier judges the samples here, as an independent judge after the fact: never inside sampling.
    metrics["generated_breed_top1"] = recognised_share(model, samples, sample_breeds)
    metrics["generated_breed_top1_vae_head"] = recognised_share(model, samples, sample_breeds, head="vae")
    # Ancestry as served and, where that is the identifier's, by the latent beside it: on the model's own mixes and
    # on held-out photos.
    served = latent_ops.served_ancestry(model)
    for by in dict.fromkeys((served, "latent")):
        suffix = "" if by == served else f"_{by}"
        metrics[f"ancestry_recovery_top1{suffix}"] = ancestry_recovery(model, seed, by=by)["top1"]
        metrics[f"ancestry_photos_top1{suffix}"] = ancestry_of_photos(model, held_out_large, labels, by, seed)
    metrics["ancestry_by"] = served
    # ... and as served on ImageNet's validation photos, which neither the trunk nor the breed space has seen.
    imagenet_val = all_photos.select(sorted(i for i in all_photos.ids if i.startswith(IMAGENET_VAL_PREFIX)))
    if imagenet_val.ids:
        val_labels = torch.tensor([breed_index[b] for b in imagenet_val.breeds])
        metrics["ancestry_imagenet_val_top1"] = ancestry_of_photos(
            model, imagenet_val.pixels, val_labels, served, seed, n=len(imagenet_val.ids)
        )
    mixes = mix_fidelity(model, seed=seed)
    metrics["mix_both_parents_top3"] = mixes["both_parents_top3"]
    metrics["mix_major_parent_first"] = mixes["major_parent_first"]
    metrics["mix_pure_parents_top3"] = mixes["pure_parents_top3"]
    transfers = transfer_fidelity(model, held_out_large, labels, latent_ops.TRANSFER_STRENGTH, seed)
    metrics["transfer_target_top1"] = transfers["target_top1"]
    metrics["transfer_target_top1_vae_head"] = transfers["target_top1_vae_head"]

    if fid_samples > 0:
        fid = FID(dev)
        n_real = min(fid_samples, len(val_ids))
        real_stats, generator = held_out_reference(fid, val_ids, val.pixels, n_real, seed, image_size, cache_dir)
        sample_stats = fid.statistics(samples[:fid_samples], "FID: prior samples")
        floor_stats, floor_photos = training_reference(fid, images, card, n_real, generator, image_size, cache_dir)
        # The same training photos through the autoencoder: the FID no prior can beat with this decoder.
        reconstructions = torch.cat(
            [latent_ops.reconstruct(model, floor_photos[i : i + 100]) for i in range(0, n_real, 100)]
        )
        reconstruction_stats = fid.statistics(reconstructions, "FID: reconstructions")
        metrics.update(
            {
                "fid_prior_samples": fid.distance(real_stats, sample_stats),
                "fid_reconstructions": fid.distance(real_stats, reconstruction_stats),
                "fid_real_vs_real": fid.distance(real_stats, floor_stats),
                "fid_samples": fid_samples,
                "fid_real_photos": int(n_real),
            }
        )

    metrics["figures"] = ["confusion.png", "latent_map.png", "samples.png", "mixes.png", "reliability.png"]
    checkpoint.atomic_write_json(out / "metrics.json", metrics)
    if update_card:
        card_path = Path(checkpoint_dir) / checkpoint.CARD_FILE
        card["evaluation"] = {k: v for k, v in metrics.items() if k != "val_kl_per_dim"}
        checkpoint.atomic_write_json(card_path, card)
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + card.json)")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders the checkpoint was trained on")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <checkpoint>/eval)")
    p.add_argument("--fid-samples", type=int, default=1000, help="0 skips FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--no-update-card", action="store_true", help="do not copy the metrics into card.json")
    p.add_argument(
        "--sweep",
        nargs="+",
        default=None,
        metavar="NAME=V1,V2",
        help="only the FID of prior samples at every combination of these sampler settings "
        f"({', '.join(SamplerSettings.names())}) and temperature=T1,T2 (one JSON line each)",
    )
    p.add_argument(
        "--sweep-against",
        choices=REFERENCES,
        default="held-out",
        help="with --sweep: the real photos FID is measured against (training: the floor's training "
        "photos, to choose settings without looking at the held-out ones)",
    )
    p.add_argument("--guide-from", type=Path, default=None, help="with --sweep: attach this autoguidance guide first")
    p.add_argument(
        "--reconstructions-only",
        action="store_true",
        help="only the FID of reconstructions and the real-vs-real floor (any checkpoint, stage 1 in progress too)",
    )
    p.add_argument(
        "--mixes-only",
        action="store_true",
        help="only whether mixes carry their parents (mix_fidelity), at the checkpoint's sampler settings or at "
        "every combination of --sweep's (one JSON line each), and the figure mix_comparison.png of six pairs",
    )
    p.add_argument(
        "--transfer-strengths",
        default=None,
        metavar="S1,S2",
        help="only whether transfers change the breed (transfer_fidelity on 200 held-out photos) at these strengths "
        "(one JSON line each)",
    )
    args = p.parse_args(argv)
    if args.transfer_strengths:
        try:
            strengths = [float(s) for s in args.transfer_strengths.split(",")]
        except ValueError:
            p.error("--transfer-strengths must be comma-separated numbers in [0, 1]")
        if not all(0 <= s <= 1 for s in strengths):
            p.error("--transfer-strengths must be comma-separated numbers in [0, 1]")
        model, card = checkpoint.load(args.checkpoint, args.device)
        breeds = [b["name"] for b in card["breeds"]]
        side = max(model.vae.cfg.head_size, PHOTO_SIZE)  # as evaluate() reads them
        val = held_out_photos(card, load_images(find_photos(args.data), side, args.cache_dir), args.data)
        labels = torch.tensor([breeds.index(b) for b in val.breeds])
        rows = [transfer_fidelity(model, val.pixels, labels, s, args.seed) for s in strengths]
        for row in rows:
            print(json.dumps(row), flush=True)
        return {"transfer_fidelity": rows}
    if args.mixes_only:
        model, card = checkpoint.load(args.checkpoint, args.device)
        try:
            candidates = settings_grid(args.sweep or [], model.sampling)
        except ValueError as err:
            p.error(str(err))
        rows = []
        for settings in candidates:
            rows.append(mix_fidelity(model, seed=args.seed, sampling=settings) | {"sampling": settings.to_dict()})
            print(json.dumps(rows[-1]), flush=True)
        out = args.out or Path(args.checkpoint) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        breeds = [b["name"] for b in card["breeds"]]
        mix_comparison(model, breeds, candidates, seed=args.seed).save(out / "mix_comparison.png")
        return {"mix_fidelity": rows}
    if args.reconstructions_only:
        result = reconstruction_fid(
            args.checkpoint, args.data, args.fid_samples or 1000, args.seed, args.device, args.cache_dir
        )
        print(json.dumps(result))
        return result
    if args.sweep:
        temperatures, assignments = split_temperatures(p, args.sweep)
        base = SamplerSettings.from_dict(checkpoint.read_card(args.checkpoint)["sampling"])
        try:
            candidates = settings_grid(assignments, base)
        except ValueError as err:
            p.error(str(err))
        rows = fid_sweep(
            args.checkpoint,
            args.data,
            candidates,
            temperatures,
            args.fid_samples,
            args.seed,
            args.device,
            args.cache_dir,
            args.sweep_against,
            args.guide_from,
        )
        return {"fid_sweep": rows}
    metrics = evaluate(
        args.checkpoint,
        args.data,
        args.out,
        args.fid_samples,
        args.seed,
        args.device,
        args.cache_dir,
        not args.no_update_card,
    )
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(json.dumps(summary, indent=2))
    return metrics


def split_temperatures(p: argparse.ArgumentParser, assignments: list[str]) -> tuple[tuple[float, ...], list[str]]:
    """``temperature=...`` is a call argument, not a sampler setting: taken out of the sweep's assignments."""
    temperatures: tuple[float, ...] = (1.0,)
    rest = []
    for assignment in assignments:
        name, _, values = assignment.partition("=")
        if name.strip() != "temperature":
            rest.append(assignment)
            continue
        try:
            temperatures = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            p.error(f"{assignment!r}: the temperatures must be comma-separated numbers")
        if not temperatures or not all(0 <= t <= 3 for t in temperatures):
            p.error(f"{assignment!r}: temperatures must lie in [0, 3]")
    return temperatures, rest


if __name__ == "__main__":
    main()
