"""The training curves of a recipe's run: how far each stage had got when it stopped, and whether it was still going.

    python -m training.curves runs/dogs120 --out docs/curves.png

Reads the metrics every stage writes into its folder of the run (``metrics.jsonl`` of stage 1,
``prior-metrics.jsonl`` of each diffusion prior, ``breed-head-metrics.jsonl``) and draws three panels: stage 1's
held-out PSNR per epoch, each denoiser's held-out denoising error per step (a ``--prior-from`` continuation is drawn
on from the steps of the prior it started from), and the breed head's held-out top-1 and top-5 per epoch. Held-out
numbers only: no photo is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prior_steps_before(folder: Path) -> int:
    """Steps the denoiser of ``folder`` had been trained before its own run: those of the priors it continued
    (in its card, each ``training.prior`` stage started with ``--prior-from`` goes on from the one before it)."""
    if not (folder / "card.json").is_file():  # a stage folder without its card yet (a run in progress)
        return 0
    card = json.loads((folder / "card.json").read_text())
    priors = [s for s in card.get("stages", []) if s["command"] == "training.prior"]
    steps, i = 0, len(priors) - 1
    while i > 0 and priors[i]["args"].get("prior_from"):
        steps += priors[i - 1]["history"][-1]["step"] if priors[i - 1].get("history") else 0
        i -= 1
    return steps


def curves(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage1 = sorted(run.glob("*/metrics.jsonl"))
    priors = sorted(run.glob("*/prior-metrics.jsonl"))
    heads = sorted(run.glob("*/breed-head-metrics.jsonl"))
    if not (stage1 or priors or heads):
        raise SystemExit(f"{run}: no stage folder with metrics (metrics.jsonl, prior-metrics.jsonl, ...)")
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for path in stage1:
        rows = read_jsonl(path)
        ax1.plot([r["epoch"] for r in rows], [r["val_psnr"] for r in rows], "o-", label=path.parent.name)
    ax1.set(title="stage 1: held-out reconstruction", xlabel="epoch", ylabel="PSNR (dB)")
    for path in priors:
        rows = read_jsonl(path)
        offset = prior_steps_before(path.parent)
        ax2.plot([offset + r["step"] for r in rows], [r["val_denoising_mse"] for r in rows], label=path.parent.name)
    ax2.set(title="latent prior: held-out denoising error", xlabel="step", ylabel="mean squared v error", xscale="log")
    if ax2.lines:  # plain numbers at a few steps: the log axis's own minor labels overlap
        last = max(max(line.get_xdata()) for line in ax2.lines)
        ticks = [s for s in (250, 500, 1000, 2000, 4000, 8000, 16000, 32000) if s <= last * 1.2]
        ax2.minorticks_off()
        ax2.set_xticks(ticks, [f"{s:,}" for s in ticks])
    for path in heads:
        rows = read_jsonl(path)
        epochs = [r["epoch"] for r in rows]
        ax3.plot(epochs, [r["held_out_top1"] for r in rows], "o-", label=f"{path.parent.name} top-1")
        ax3.plot(epochs, [r["held_out_top5"] for r in rows], "o--", label=f"{path.parent.name} top-5")
    ax3.set(title="breed head: held-out photos", xlabel="epoch", ylabel="accuracy")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(str(run))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m training.curves", description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a recipe's --out folder (one subfolder per stage)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default RUN/curves.png)")
    args = p.parse_args(argv)
    out = curves(args.run, args.out or args.run / "curves.png")
    print(out)
    return out


if __name__ == "__main__":
    main()
