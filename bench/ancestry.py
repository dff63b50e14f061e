"""How well /ancestry finds the breeds of dogs the model generated from known mixes, and how long it takes.

    .venv/bin/python -m bench.ancestry                                  # default checkpoint, shares 1, 0.85, 0.7
    .venv/bin/python -m bench.ancestry --shares 0.7 --out runs/ancestry.json
    .venv/bin/python -m bench.ancestry --by latent                      # the latent's answer, not the served one

For every breed b and every share s, one dog is generated from the mix "s of b, 1 - s of the breed 14 places
further on" and given to ``latent_ops.ancestry`` as a photo (``training.evaluate.ancestry_recovery``; its top-1
at 0.7 is the evaluation's ``ancestry_recovery_top1``, or ``_latent`` by the latent). Per share it reports how often the
largest component comes back as the largest weight (top-1), how often it is anywhere in the answer, the mean
weight it gets, and the seconds per ancestry call. Needs no data set: only the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from model import checkpoint, latent_ops
from training.evaluate import ancestry_recovery

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(prog="python -m bench.ancestry", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs120")
    p.add_argument(
        "--shares", default="1,0.85,0.7", help="comma-separated shares of the largest component, in (0.5, 1]"
    )
    p.add_argument("--max-breeds", type=int, default=3)
    p.add_argument("--by", choices=latent_ops.ANCESTRY_SPACES, default=None, help="default: the served ancestry")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    shares = [float(s) for s in args.shares.split(",")]
    if not all(0.5 < s <= 1 for s in shares):
        p.error("--shares must lie in (0.5, 1]: the largest component must be larger than the other")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = checkpoint.load(args.checkpoint, torch.device("cpu"))
    rows = [ancestry_recovery(model, args.seed, s, args.max_breeds, not args.no_progress, by=args.by) for s in shares]
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"checkpoint": str(args.checkpoint), "seed": args.seed, "rows": rows}, indent=2) + "\n"
        )
    return rows


if __name__ == "__main__":
    main()
