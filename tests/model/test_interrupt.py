"""model/interrupt.py: long model work stops at its next step when its caller loses interest."""

from __future__ import annotations

import pytest
import torch

from model import interrupt, sampler
from model.sampler import SamplerSettings
from tests.model.test_sampler import random_denoiser


def test_check_does_nothing_outside_a_stop_block() -> None:
    interrupt.check()
    with interrupt.stop_when(lambda: False):
        interrupt.check()


def test_the_sampler_stops_at_the_step_after_the_predicate_turns_true() -> None:
    denoiser, calls = random_denoiser(), []
    velocity = denoiser.velocity

    def counted(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return velocity(*args)

    denoiser.velocity = counted  # type: ignore[method-assign]
    asked = []

    def after_three_steps() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(interrupt.Interrupted), interrupt.stop_when(after_three_steps), torch.no_grad():
        sampler.sample(denoiser, torch.randn(2, 16), torch.eye(4)[:2], SamplerSettings(steps=100, guidance=1.0))
    assert len(calls) == 3  # three of the 100 steps ran
    interrupt.check()  # the block is over: nothing raises
