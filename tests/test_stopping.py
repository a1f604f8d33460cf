"""Automatic stopping (ES-WMV): the detector on sequences with a known peak, and
``reconstruct(steps="auto")``."""

from __future__ import annotations

import pytest
import torch

from metadip.api import reconstruct
from metadip.operators import CompressiveSensing, Denoise
from metadip.stopping import (
    DISCREPANCY,
    WindowedVariance,
    default_window,
    discrepancy_floor,
    watcher_for,
)
from tests.conftest import smooth_image, tiny_init

F64 = torch.float64


def _sequence(peaks: list[int], steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Iterates ``(B, 1, 8, 8)`` that move least at each problem's peak: a fixed image
    plus fresh noise scaled by the distance to the peak."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(len(peaks), 1, 8, 8, generator=g, dtype=F64)
    out = []
    for t in range(1, steps + 1):
        scale = torch.tensor([abs(t - p) / p + 0.01 for p in peaks], dtype=F64)
        noise = torch.randn(base.shape, generator=g, dtype=F64)
        out.append(base + scale.view(-1, 1, 1, 1) * noise)
    return out


def test_detects_a_known_peak_and_stops_after_the_patience():
    watcher = WindowedVariance(window=5, patience=20)
    seq = _sequence([50], 200)
    for t, x in enumerate(seq, start=1):
        watcher.update(x, t)
        if watcher.done:
            break
    (best,) = watcher.best_steps
    # The window ending at `best` straddles the peak.
    assert 50 <= best <= 50 + 5
    assert t == best + 20 and watcher.found == [True]
    torch.testing.assert_close(watcher.best_images[0], seq[best - 1][0])


def test_each_problem_of_a_batch_stops_on_its_own():
    watcher = WindowedVariance(window=5, patience=15)
    seq = _sequence([30, 80], 300)
    for t, x in enumerate(seq, start=1):
        watcher.update(x, t)
        if watcher.done:
            break
    first, second = watcher.best_steps
    assert 30 <= first <= 35 and 80 <= second <= 85
    assert t == second + 15


def test_observe_replays_the_rule_on_recorded_variances():
    # The rule fed the variances update() computes (no images) stops at the same step
    # with the same choice: what benchmarks/stopping_study.py replays on recorded runs.
    seq = _sequence([40, 70], 250, seed=1)
    live, replay = WindowedVariance(5, 25), WindowedVariance(5, 25)
    for t, x in enumerate(seq, start=1):
        live.update(x, t)
        if t >= 5:
            stack = torch.stack(seq[t - 5 : t])
            var = (stack - stack.mean(dim=0)).pow(2).flatten(2).mean(dim=2).mean(dim=0)
            replay.observe(var, t)
            assert live.done == replay.done and live.stopped == replay.stopped
        if live.done:
            break
    assert replay.best_steps == live.best_steps and replay.best_images is None
    # A hand-made sequence: minimum at step 4, patience 3 -> stops at step 7.
    watcher = WindowedVariance(2, 3)
    for t, v in enumerate([5.0, 4.0, 3.0, 1.0, 2.0, 1.5, 1.2, 0.5], start=1):
        watcher.observe(torch.tensor([v]), t)
        if watcher.done:
            break
    assert (t, watcher.best_steps) == (7, [4])


def test_stopping_study_scores_rules_on_a_recorded_row():
    from benchmarks.stopping_study import score

    # PSNR peaks at step 6; the variance (window 2, steps 2..10) is lowest at step 4;
    # the data fit reaches σ² = 0.01 at step 5.
    row = {
        "curve": [20.0, 22.0, 24.0, 26.0, 27.0, 28.0, 27.5, 27.0, 26.0, 25.0],
        "variance": {"2": [5.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]},
        "loss": [0.1, 0.05, 0.03, 0.02, 0.01, 0.009, 0.008, 0.007, 0.006, 0.005],
        "sigma": 0.1,
    }
    assert score(row, "wmv:2:3") == (2.0, 4, 7)
    assert score(row, "discrepancy:1.0") == (1.0, 5, 5)
    # Counting minima from step 5 on: the lowest variance there is step 5's.
    assert score(row, "wmv+discrepancy:2:2:1.0") == (1.0, 5, 7)
    with pytest.raises(ValueError, match="unknown rule"):
        score(row, "oracle")


def test_the_discrepancy_gate_skips_a_lull_before_the_noise_level():
    # Two lulls: step 30, while the data fit is still above the floor, and step 90 after
    # it has come down. Ungated ES-WMV takes the first; gated, the second.
    g = torch.Generator().manual_seed(2)
    base = torch.rand(1, 1, 8, 8, generator=g, dtype=F64)
    scale = lambda t: min(abs(t - 30) / 30, abs(t - 90) / 30) + 0.01  # noqa: E731
    seq = [base + scale(t) * torch.randn(base.shape, generator=g, dtype=F64) for t in range(1, 200)]
    losses = [[1.0 if t < 60 else 0.05] for t in range(1, 200)]
    picks = []
    for floor in (None, [0.1]):
        watcher = WindowedVariance(5, 40, floor=floor)
        for t, (x, loss) in enumerate(zip(seq, losses, strict=True), start=1):
            watcher.update(x, t, loss)
            if watcher.done:
                break
        picks.append(watcher.best_steps[0])
    assert 30 <= picks[0] <= 35 and 90 <= picks[1] <= 95
    # A floor that is never reached: no minimum counts, the fit keeps its last image.
    never = WindowedVariance(5, 10, floor=[1e-9])
    for t, x in enumerate(seq[:50], start=1):
        never.update(x, t, [1.0])
    assert not never.done and never.found == [False]
    with pytest.raises(ValueError, match="needs each problem's data fit"):
        WindowedVariance(5, 10, floor=[0.1]).update(seq[0], 1)
    with pytest.raises(ValueError, match="floor must hold"):
        WindowedVariance(5, 10, floor=[-1.0])


def test_discrepancy_floor_is_for_denoising_with_noise():
    assert default_window(1000) == (50, 200) and default_window(1000, gated=True) == (10, 200)
    assert discrepancy_floor(Denoise((1, 8, 8), 0.1), 2) == pytest.approx([DISCREPANCY * 0.01] * 2)
    assert discrepancy_floor(Denoise((1, 8, 8), 0.0), 1) is None
    assert discrepancy_floor(CompressiveSensing((1, 8, 8), 0.5, sigma=0.1, seed=0), 1) is None
    gated = watcher_for(Denoise((1, 8, 8), 0.1), 1, 1000)
    plain = watcher_for(CompressiveSensing((1, 8, 8), 0.5, sigma=0.1, seed=0), 1, 1000)
    assert (gated.window, gated.patience) == (10, 200)
    assert gated.floor.tolist() == pytest.approx([DISCREPANCY * 0.01])
    assert (plain.window, plain.patience, plain.floor) == (50, 200, None)


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        WindowedVariance(window=1, patience=5)
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        WindowedVariance(window=5, patience=0)
    assert default_window(1000) == (50, 200) and default_window(40) == (5, 20)


def _problem(batch: int = 1):
    op = Denoise((1, 16, 16), 0.1)
    x = torch.stack([smooth_image(1, 16, 16, seed=i).to(F64) for i in range(batch)])
    return op, op.measure(x, torch.Generator().manual_seed(0))


def test_reconstruct_auto_stops_and_returns_the_detected_image():
    op, y = _problem()
    init = tiny_init(1, steps=10, rule="adam", lr=0.05)
    seen = []
    rec = reconstruct(y[0], op, init=init, steps="auto", max_steps=300, dtype=F64,
                      callback=lambda info: seen.append(info.step))  # fmt: skip
    assert rec.stopped_at is not None and 1 <= rec.stopped_at <= rec.steps <= 300
    assert len(rec.losses) == rec.steps and len(seen) == rec.steps
    # The returned image is the network's output after `stopped_at` steps.
    fixed = reconstruct(y[0], op, init=init, steps=rec.stopped_at, dtype=F64)
    assert fixed.stopped_at is None
    probe = []
    reconstruct(y[0], op, init=init, steps=rec.stopped_at, dtype=F64,
                callback=lambda info: probe.append(info.image()[0]))  # fmt: skip
    torch.testing.assert_close(rec.image, probe[-1])


def test_batched_auto_equals_single_runs():
    op, y = _problem(batch=2)
    init = tiny_init(1, steps=10, rule="adam", lr=0.05)
    both = reconstruct(y, op, init=init, steps="auto", max_steps=300, dtype=F64)
    for b in range(2):
        one = reconstruct(y[b], op, init=init, steps="auto", max_steps=300, dtype=F64)
        assert both.stopped_at[b] == one.stopped_at
        torch.testing.assert_close(both.image[b], one.image)
    assert both.steps == max(len(row) for row in both.losses)


def test_auto_stopping_arguments_are_checked():
    op, y = _problem()
    init = tiny_init(1, steps=4)
    with pytest.raises(ValueError, match="steps must be an integer >= 0 or 'auto'"):
        reconstruct(y[0], op, init=init, steps="soon")
    with pytest.raises(ValueError, match="pass it with steps='auto'"):
        reconstruct(y[0], op, init=init, steps=10, max_steps=20)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        reconstruct(y[0], op, init=init, steps="auto", max_steps=0)
    with pytest.raises(RuntimeError, match="reads the iterates on the host"):
        reconstruct(y[0], op, init=init, steps="auto", graph=True)
