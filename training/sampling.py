"""Choose a checkpoint's stored sampling settings by FID against training photos, and write them into a copy.

    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --guidance 2,3,4 --sampling-steps 8
    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --eta 0,0.5,1 --sampling-steps 8,16
    python -m training.sampling runs/dogs64-prior --data ../shared/dogs --out runs/tuned --residual-scales 0.25,0.5,0.75
    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --guide-from runs/guide96s --autoguidance 1.5,2,3
    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --guidance 3,4,5 --guidance-rescale 0,0.5
    python -m training.sampling runs/dogs64-dg --data ../shared/dogs --out runs/tuned --discriminator-guidance 0,0.5,1,2
    python -m training.sampling checkpoints/dogs64 --data ../shared/dogs --out runs/tuned --output-scale 0.85,0.9,0.95

A learned prior stores how it is sampled: the classifier-free guidance scale, number of DDIM steps, guidance
interval, DDIM eta, autoguidance weight, guidance rescale, discriminator guidance weight (the discriminator trained by
``python -m training.discriminator``) and output scale of a diffusion prior, the residual scale of a two-stage prior.
``--guide-from`` first attaches another checkpoint's diffusion prior as the autoguidance guide (Karras et al. 2024:
a weaker denoiser, smaller and/or trained for less time by ``python -m training.prior --kind diffusion --init-from`` the same
checkpoint, whose errors the samples are pushed away from); its weights are then written with the checkpoint.
The prior command sets guidance and steps from its flags (and guides every step, deterministically); this command measures the FID of
the same 1,000 balanced prior samples at each candidate setting (one JSON line each, like ``python -m training.evaluate
--sweep-temperatures 1``) against **training** photos, those of the evaluation's real-vs-real floor, never
against the held-out photos the evaluation reports FID on, so that the reported FID of the chosen setting has
not been selected on. It then writes the checkpoint with the setting of the lowest FID to ``--out``, unchanged
otherwise: the weights are byte-identical (plus the guide's, with ``--guide-from``). The card records every row under ``sampling_selection`` (a source's own selections move to
``earlier_sampling_selections``, so the guide's lineage stays) and drops
the source's ``evaluation`` (it was measured at the old setting): run ``python -m training.evaluate`` on the
new folder. About 3 minutes per setting on 2 CPU cores. Each row also records ``generated_breed_top1``, how often
the breed head names the requested breed in the same samples: the lowest FID can cost breed (stronger guidance
trades variety for breed), and to keep another row, run again with only its setting, as the default was made.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from model import checkpoint
from training.evaluate import SWEPT_SETTINGS, _floats, fid_sweep
from training.train import git_commit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.sampling", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint with a learned prior (python -m training.prior)")
    p.add_argument("--data", type=Path, required=True, help="the data folder the checkpoint was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the checkpoint with the chosen setting")
    p.add_argument("--guidance", default=None, metavar="G1,G2,...", help="diffusion: classifier-free guidance scales to try")
    p.add_argument("--sampling-steps", default=None, metavar="S1,S2,...", help="diffusion: numbers of DDIM steps to try")
    p.add_argument("--guidance-max-t", default=None, metavar="T1,T2,...",
                   help="diffusion: guidance intervals to try (guidance only at diffusion times t <= T; 1: every step)")
    p.add_argument("--eta", default=None, metavar="E1,E2,...",
                   help="diffusion: DDIM etas to try (fresh noise per step; 0: deterministic, 1: as much as DDPM)")
    p.add_argument("--guide-from", type=Path, default=None,
                   help="diffusion: attach this checkpoint's diffusion prior (trained on the same stage 1) as the autoguidance guide")
    p.add_argument("--autoguidance", default=None, metavar="W1,W2,...",
                   help="diffusion: autoguidance weights to try (at least 1; 1: the guide unused); needs a guide")
    p.add_argument("--guidance-rescale", default=None, metavar="R1,R2,...",
                   help="diffusion: guidance rescales to try (0: plain guidance, 1: the conditional prediction's spread)")
    p.add_argument("--discriminator-guidance", default=None, metavar="D1,D2,...",
                   help="diffusion: discriminator guidance weights to try (0: unused); needs a latent discriminator")
    p.add_argument("--output-scale", default=None, metavar="S1,S2,...",
                   help="diffusion: output scales of the sampled standardised latents to try (1: as sampled; below 1: "
                        "towards their mean), in (0, 2]")
    p.add_argument("--residual-scales", default=None, metavar="R1,R2,...", help="two-stage: residual scales to try")
    p.add_argument("--fid-samples", type=int, default=1000, help="prior samples (and training photos) per FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.out.resolve() == args.checkpoint.resolve():
        p.error("--out must be another folder: the source's evaluation would no longer match its settings")
    if args.fid_samples < 2:
        p.error("--fid-samples must be at least 2")
    guidance = _floats(args.guidance) if args.guidance else None
    steps = [int(v) for v in _floats(args.sampling_steps)] if args.sampling_steps else None
    max_ts = _floats(args.guidance_max_t) if args.guidance_max_t else None
    etas = _floats(args.eta) if args.eta else None
    autoguidances = _floats(args.autoguidance) if args.autoguidance else None
    rescales = _floats(args.guidance_rescale) if args.guidance_rescale else None
    discriminator_weights = _floats(args.discriminator_guidance) if args.discriminator_guidance else None
    output_scales = _floats(args.output_scale) if args.output_scale else None
    scales = _floats(args.residual_scales) if args.residual_scales else None
    if (not all(g >= 0 for g in guidance or []) or any(s < 1 for s in steps or [])
            or not all(0 <= r <= 1 for r in (scales or []) + (max_ts or []) + (etas or []) + (rescales or []))
            or not all(w >= 1 for w in autoguidances or []) or not all(d >= 0 for d in discriminator_weights or [])
            or not all(0 < s <= 2 for s in output_scales or [])):
        p.error("guidance scales must not be negative, sampling steps must be positive, "
                "residual scales, guidance intervals, etas and guidance rescales must lie in [0, 1], "
                "autoguidance weights must be at least 1, discriminator guidance weights must not be negative, "
                "output scales must lie in (0, 2]")
    diffusion = (guidance or steps or max_ts or etas or autoguidances or rescales or discriminator_weights or output_scales
                 or args.guide_from)
    if not (diffusion or scales):
        p.error("give the candidates: --guidance, --sampling-steps, --guidance-max-t, --eta, --autoguidance, "
                "--guidance-rescale, --discriminator-guidance and/or --output-scale (diffusion), or --residual-scales (two-stage)")
    if scales and diffusion:
        p.error("--residual-scales is for a two-stage prior, --guidance, --sampling-steps, --guidance-max-t, --eta, "
                "--guide-from, --autoguidance, --guidance-rescale, --discriminator-guidance and --output-scale for a diffusion prior")
    (args.guidance, args.sampling_steps, args.guidance_max_t, args.eta, args.autoguidance, args.guidance_rescale,
     args.discriminator_guidance, args.output_scale, args.residual_scales) = (guidance, steps, max_ts, etas, autoguidances,
                                                                              rescales, discriminator_weights, output_scales, scales)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = checkpoint.load(args.checkpoint)
    if model.cfg.latent_prior not in ("diffusion", "two_stage"):
        raise SystemExit(f"{args.checkpoint} has no learned prior (latent_prior={model.cfg.latent_prior!r}): nothing to choose")
    rows = fid_sweep(args.checkpoint, args.data, [1.0], args.residual_scales, args.fid_samples, args.seed, args.device,
                     args.cache_dir, args.guidance, args.sampling_steps, reference="training",
                     guidance_max_ts=args.guidance_max_t, etas=args.eta, autoguidances=args.autoguidance,
                     guide_from=args.guide_from, guidance_rescales=args.guidance_rescale,
                     discriminator_guidances=args.discriminator_guidance, output_scales=args.output_scale)
    if args.guide_from:  # the written checkpoint carries the guide its rows were measured with
        checkpoint.attach_guide(model, args.guide_from)
    best = min(rows, key=lambda r: r["fid_prior_samples"])
    chosen = {field: best[name] for name, field in SWEPT_SETTINGS.items() if name in best}
    before = {f: getattr(model.cfg, f) for f in chosen}
    for f, value in chosen.items():
        setattr(model.cfg, f, value)
    selection = {"source": str(args.checkpoint), "guide_from": str(args.guide_from) if args.guide_from else None,
                 # how the guide was trained (its own card is not copied), so the checkpoint's lineage stays reproducible
                 "guide_prior_training": checkpoint.read_card(args.guide_from).get("latent_prior_training") if args.guide_from else None,
                 "reference": "training photos (the evaluation's real-vs-real floor)",
                 "fid_samples": args.fid_samples, "seed": args.seed, "rows": rows, "before": before, "chosen": chosen,
                 "git_commit": git_commit()}
    new_card = {k: v for k, v in card.items()
                if k not in ("evaluation", "format", "config", "torch_version", "weights_sha256")}
    if "sampling_selection" in card:  # keep the earlier choices: one of them may name the guide this checkpoint carries
        new_card["earlier_sampling_selections"] = [*card.get("earlier_sampling_selections", []), card["sampling_selection"]]
    checkpoint.save(model, new_card | {"sampling_selection": selection}, args.out)
    print(f"chosen {chosen} (FID {best['fid_prior_samples']:.1f} against training photos; was {before}); "
          f"wrote {args.out}. Next: python -m training.evaluate {args.out} --data {args.data}", flush=True)
    return selection


if __name__ == "__main__":
    main()
