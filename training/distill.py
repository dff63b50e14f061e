"""Distil a checkpoint's guided diffusion sampler into a few-step student and write the checkpoint with both.

    python -m training.distill --init-from runs/dogs120/prior --data ../shared/kaggle-dog-breed-identification \
        ../shared/dogs --out runs/dogs120/student

The teacher is the checkpoint's sampler at ``2 x --student-steps`` deterministic DDIM steps with its guidance
settings (classifier-free guidance, its rescale, autoguidance): 2 or 3 denoiser passes a step. The student, a copy of
the teacher's denoiser to start with, learns to take in one unguided pass what two teacher steps do
(``training.losses.distillation_loss``), on the same training latents as the prior (the card's split). Every
``--log-every`` steps it is scored by how far its samples land from the teacher's from the same noise (the mean
squared difference of standardised latents over a fixed set of breeds, mixes and seeds), and the best averaged
weights are kept. The written checkpoint samples with the student by default (``distilled``); the teacher stays in
it for ``distilled=false`` and for ancestry. Writes ``distill-metrics.jsonl`` and ``figures/student-vs-teacher.png``
(per row one breed: the teacher's dogs, then the student's from the same seeds). Resumable (``--resume``) from its
last check, like ``python -m training.prior``. A step's passes run in bf16 where the machine computes it natively
(``training.common.bf16_autocast``; the checks in float32): half the time, the same distances to the teacher.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint, latent_ops, sampler
from model.imaging import labelled_rows
from model.prior import DiffusionPrior, DogModel, Student
from training.common import (
    RESUME_STATE,
    bf16_autocast,
    command_args,
    git_commit,
    load_resume_state,
    lr_at,
    next_card,
    resolve_device,
    save_resume_state,
    set_threads,
)
from training.data import balanced_indices
from training.losses import distillation_loss
from training.prior import WeightAverage, noise_seed, split_latents

MIXED_SHARE = 0.25  # of each batch conditioned on a random two-breed mix, so that mixes are distilled too
CHECK_SAMPLES = 256  # noise, breed and mix triples the student is compared with the teacher on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", type=Path, required=True, help="a checkpoint with a diffusion prior")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the data folders it was trained on")
    p.add_argument("--out", type=Path, required=True, help="output folder for the new checkpoint")
    p.add_argument("--student-steps", type=int, default=4, help="denoiser passes per dog of the student")
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weight average that is checked and kept")
    p.add_argument("--log-every", type=int, default=100, help="steps between checks against the teacher")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop at the first check at or after this step (--resume goes on)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last check saved in --out")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed image cache (default ~/.cache/vae-dogs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm bar (logs stay)")
    args = p.parse_args(argv)
    if min(args.student_steps, args.steps, args.batch_size, args.log_every) < 1:
        p.error("--student-steps, --steps, --batch-size and --log-every must be positive")
    if not 0 <= args.ema < 1:
        p.error("--ema must lie in [0, 1)")
    return args


# What makes two invocations the same run (a resumed one may change the device, threads and where it stops).
RUN_ARGS = ("init_from", "student_steps", "steps", "batch_size", "lr", "ema", "log_every", "seed")


def training_conditions(breeds: torch.Tensor, n_breeds: int, generator: torch.Generator) -> torch.Tensor:
    """One-hot weights of the latents' own breeds, and for ``MIXED_SHARE`` of them a mix with a random other
    breed (the own breed's weight uniform in [0.2, 0.8]): the teacher's mixes are what the service serves."""
    w = F.one_hot(breeds, n_breeds).float()
    mixed = torch.rand(len(breeds), generator=generator) < MIXED_SHARE
    other = torch.randint(n_breeds, (len(breeds),), generator=generator)
    share = 0.2 + 0.6 * torch.rand(len(breeds), generator=generator)
    blend = share[:, None] * w + (1 - share[:, None]) * F.one_hot(other, n_breeds).float()
    return torch.where(mixed[:, None], blend, w)


def check_set(n_breeds: int, noise_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed starting noise and conditions (every breed, then two-breed mixes) the student is compared on."""
    generator = torch.Generator().manual_seed(seed + 99)
    breeds = torch.arange(CHECK_SAMPLES) % n_breeds
    weights = training_conditions(breeds, n_breeds, generator)
    return torch.randn(CHECK_SAMPLES, noise_dim, generator=generator), weights


@torch.no_grad()
def distance_to_teacher(
    student: Student, teacher_latents: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor
) -> float:
    """Mean squared difference, in standardised units, of the student's samples from the teacher's (both at the
    teacher's output scale and mix strength)."""
    z = sampler.sample(student.denoiser, noise, weights, student.settings(student.teacher))
    standardise = student.denoiser.standardise
    return (standardise(z) - standardise(teacher_latents)).pow(2).mean().item()


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    source, card = checkpoint.load(args.init_from, device)
    prior = source.prior
    if not isinstance(prior, DiffusionPrior):
        raise SystemExit(f"{args.init_from} has a {prior.kind} prior; distillation needs a diffusion prior")
    teacher, guide = prior.denoiser, prior.guide
    # The teacher's own guidance, at twice the student's steps and deterministic.
    teaching = replace(source.sampling, steps=2 * args.student_steps, eta=0.0, distilled=False)
    if teaching.autoguidance != 1.0 and guide is None:
        raise SystemExit(f"{args.init_from}'s sampler uses autoguidance but it has no guide")
    torch.manual_seed(args.seed)
    student = copy.deepcopy(teacher).train()
    for module in (teacher, *([guide] if guide else [])):
        module.eval().requires_grad_(False)
    with torch.no_grad():
        train_z, train_y, _, _, mirrored_z = split_latents(source, card, args.data, args.cache_dir, device, True)
    train_z, train_y = torch.cat([train_z, mirrored_z]), torch.cat([train_y, train_y])
    n_breeds = source.n_breeds
    order = balanced_indices(train_y, args.steps * args.batch_size, torch.Generator().manual_seed(args.seed))
    noise, weights = check_set(n_breeds, teacher.z_mean.numel(), args.seed)
    noise, weights = noise.to(device), weights.to(device)
    with torch.no_grad():
        teacher_latents = sampler.sample(teacher, noise, weights, teaching, guide)
    before = distance_to_teacher(Student(student, args.student_steps, teaching), teacher_latents, noise, weights)
    print(
        f"{len(train_z)} training latents; teacher: {teaching.steps} steps at guidance {teaching.guidance:g}; "
        f"the undistilled copy at {args.student_steps} steps lands {before:.4g} from it",
        flush=True,
    )
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    average = WeightAverage(student, args.ema) if args.ema else None
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = args.out / "distill-metrics.jsonl"
    history: list[dict[str, Any]] = [{"step": 0, "seconds": 0.0, "distance_to_teacher": before}]
    best: tuple[float, int, dict[str, torch.Tensor]] = (before, 0, copy.deepcopy(student.state_dict()))
    run_args = {k: v for k, v in command_args(args).items() if k in RUN_ARGS}
    first_step = 0
    if args.resume:
        if not (args.out / RESUME_STATE).is_file():
            raise SystemExit(f"--resume: no {RESUME_STATE} in {args.out}; start without --resume")
        kept, averaged = copy.deepcopy(student), copy.deepcopy(student)
        resumed = load_resume_state(args.out, {"student": student, "best": kept, "average": averaged}, {"opt": opt})
        if resumed.get("run_args") != run_args:
            raise SystemExit(f"--resume: {args.out} holds another run ({resumed.get('run_args')})")
        first_step, history = resumed["step"], resumed["history"]
        best = (resumed["best_distance"], resumed["best_step"], copy.deepcopy(kept.state_dict()))
        if average:
            average.state = {k: v.clone() for k, v in averaged.state_dict().items()}
            average.updates = resumed["average_updates"]
        print(f"resumed at step {first_step} (best so far: step {best[1]})", flush=True)
    else:
        metrics.unlink(missing_ok=True)

    def save_resume(step: int) -> None:
        kept, averaged = copy.deepcopy(student), copy.deepcopy(student)
        kept.load_state_dict(best[2])
        if average:
            averaged.load_state_dict(average.state)
        counters = {"step": step, "history": history, "run_args": run_args, "best_distance": best[0]}
        counters |= {"best_step": best[1], "average_updates": average.updates if average else 0}
        save_resume_state(args.out, {"student": student, "best": kept, "average": averaged}, {"opt": opt}, counters)

    # The training noise and mixes are reseeded after every check, so a resumed run draws what an unbroken one would.
    generator = torch.Generator().manual_seed(noise_seed(args.seed, first_step))
    torch.manual_seed(noise_seed(args.seed, first_step))
    started, running, since_log = time.time(), 0.0, 0
    earlier_seconds = history[-1]["seconds"]
    bar = tqdm(range(first_step, args.steps), desc="distillation", disable=args.no_progress, initial=first_step)
    bar.total = args.steps
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=100)
        idx = order[step * args.batch_size : (step + 1) * args.batch_size]
        # The conditions as the sampler scales them (mix_strength), so the student learns the mixes it will serve.
        w = sampler.mix_condition(training_conditions(train_y[idx], n_breeds, generator), teaching.mix_strength)
        w = w.to(device)
        with bf16_autocast(device):  # the teacher's passes and the student's (the checks run in float32)
            loss = distillation_loss(student, teacher, train_z[idx].to(device), w, teaching, args.student_steps, guide)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average:
            average.update(student)
        running, since_log = running + loss.item(), since_log + 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            checked = copy.deepcopy(student)
            if average:
                checked.load_state_dict(average.state)
            distance = distance_to_teacher(
                Student(checked.eval(), args.student_steps, teaching), teacher_latents, noise, weights
            )
            entry = {
                "step": step + 1,
                "seconds": round(earlier_seconds + time.time() - started, 1),
                "train_distillation_loss": running / since_log,
                "distance_to_teacher": distance,
            }
            history.append(entry)
            with open(metrics, "a") as f:
                f.write(json.dumps(entry) + "\n")
            if distance < best[0]:
                best = (distance, step + 1, copy.deepcopy(checked.state_dict()))
            running, since_log = 0.0, 0
            bar.set_postfix(distance=f"{distance:.4g}", best_step=best[1])
            generator.manual_seed(noise_seed(args.seed, step + 1))
            torch.manual_seed(noise_seed(args.seed, step + 1))
            save_resume(step + 1)
            if args.stop_after and step + 1 >= args.stop_after and step + 1 < args.steps:
                print(f"stopped at step {step + 1} (--stop-after); --resume goes on", flush=True)
                return args.out

    student.load_state_dict(best[2])
    student.eval().requires_grad_(False)
    model = DogModel(
        source.vae,
        DiffusionPrior(teacher, guide, Student(student, args.student_steps, teaching)),
        replace(source.sampling, distilled=True),
        source.identifier,
    )
    stage = {
        "command": "training.distill",
        "args": command_args(args),
        "git_commit": git_commit(),
        "best_step": best[1],
        "history": history,
    }
    checkpoint.save(model, next_card(card, stage), args.out)

    breeds = [b["name"] for b in card["breeds"]]
    shown = list(range(min(n_breeds, 8)))
    rows = []
    for b in shown:
        for settings in (teaching, model.sampling):
            rows.append(latent_ops.sample(model, 4, breed=b, seed=b, sampling=settings))
    labels = [f"{breeds[b]}: {who}" for b in shown for who in ("teacher", "student")]
    (args.out / "figures").mkdir(exist_ok=True)
    labelled_rows(torch.cat(rows), labels, columns=4).save(args.out / "figures" / "student-vs-teacher.png")
    print(
        f"wrote {args.out}: kept step {best[1]}; the student's {args.student_steps}-step samples land "
        f"{best[0]:.4g} from the teacher's {teaching.steps}-step ones (the undistilled copy: {before:.4g})",
        flush=True,
    )
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
