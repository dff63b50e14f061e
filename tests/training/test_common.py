from __future__ import annotations

import pytest
import torch

from model.sampler import SamplerSettings
from training.common import bf16_autocast, lr_at, settings_grid


def test_a_grid_is_every_combination_over_the_base_settings() -> None:
    base = SamplerSettings(steps=8, guidance=5.0, eta=1.0)
    grid = settings_grid(["guidance=3,4", "steps=4,8", "output-scale=0.9"], base)
    assert [(s.guidance, s.steps, s.output_scale) for s in grid] == [(3, 4, 0.9), (3, 8, 0.9), (4, 4, 0.9), (4, 8, 0.9)]
    assert all(s.eta == 1.0 and isinstance(s.steps, int) for s in grid)
    assert settings_grid([], base) == [base]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("guidance", "expected NAME=V1,V2"),
        ("temperature=1", "NAME one of"),
        ("eta=", "no values"),
        ("eta=a", "numbers"),
    ],
)
def test_bad_assignments_say_what_is_wrong(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_grid([assignment], SamplerSettings())


def test_the_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    assert lr_at(0, 1000, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_at(10, 1000, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(1000, 1000, 1.0, warmup=10) == pytest.approx(0.1)


@pytest.mark.parametrize("avx512_bf16, amx, enabled", [(True, False, True), (False, True, True), (False, False, False)])
def test_training_steps_run_in_bf16_where_the_cpu_computes_it(
    avx512_bf16: bool, amx: bool, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emulated bfloat16 is slower than float32: a CPU without it trains in float32."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    context = bf16_autocast(torch.device("cpu"))
    assert context._enabled is enabled and context.fast_dtype == torch.bfloat16
