"""Writes a shipped per-task default made of the denoising default's network fed the
TV-regularized least-squares estimate instead of Aᵀy (``guide="tv"``).

    python benchmarks/results/recipe_study/ship_tv_guide.py --task cs [--iters 50] [--weight 1.0]
    python benchmarks/results/recipe_study/ship_tv_guide.py --task blur --weight 0.3 --rate-scale X
    python benchmarks/results/recipe_study/ship_tv_guide.py --task pr --weight 0.3
    python benchmarks/results/recipe_study/ship_tv_guide.py --task cs \
        --source benchmarks/results/educated_tv/init.safetensors --out CANDIDATE
    S=benchmarks/results/recipe_study/inits/educated_tv_step1000.safetensors
    python benchmarks/results/recipe_study/ship_tv_guide.py --task sr --weight 0.3 \
        --rate-scale 0.1 --source $S
    python benchmarks/results/recipe_study/ship_tv_guide.py --task linear --weight 0.5 \
        --rate-scale 0.1 --source $S

``--task linear`` writes ``linear.safetensors``, the file of every linear operator whose
task has none of its own (``metadip.shipped.LINEAR_DEFAULT_NAME``).

The shipped denoiser (``metadip/weights/denoise.safetensors``: Educated DIP, residual, a
noise-level channel) gets ``NetConfig(guide="tv", guide_iters, guide_weight)`` and the
data-fit loss (SURE is for denoising only); its weights and Adam fine-tune rule are kept,
the rule's rates multiplied by ``--rate-scale`` (``MetaInit.scaled_rates``). ``--source``
takes the network from another file of the same kind instead, e.g. a checkpoint of
``configs/educated_tv.toml``, the denoiser pretrained further on TV starts.
The TV weight (λ = weight · σ) and iteration count were chosen on the tuning patches
(λ ∈ {0.03, 0.1, 0.3} at σ = 25/255, 50–200 iterations; for phase retrieval, where the
estimate is TV-regularized amplitude flow, weight ∈ {0.1, 0.3, 1, 3}; README of this
folder).
Written to ``metadip/weights/<task>.safetensors`` with its provenance.
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import replace
from pathlib import Path

from metadip.init import MetaInit

ROOT = Path(__file__).resolve().parents[3]


def _what(task: str) -> str:
    if task == "linear":
        return "linear operators without a file of their own"
    return f"task {task!r}"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, help="the operator task it is shipped for")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--rate-scale", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=None, help="default: metadip/weights/<task>")
    p.add_argument(
        "--source",
        type=Path,
        default=Path("metadip/weights/denoise.safetensors"),
        help="the network and Adam rule to start from (relative to the repository)",
    )
    args = p.parse_args(argv)
    init = MetaInit.load(ROOT / args.source)
    config = replace(init.config, guide="tv", guide_iters=args.iters, guide_weight=args.weight)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    # The rule's base rate: the denoiser's file records it; a training checkpoint does not,
    # so it is read from the rule itself (every rate of the shipped Adam rule is equal).
    base_lr = init.metadata.get("fine_tune", {}).get("lr", float(init.log_lr.exp().max()))
    fine_tune = {
        "rule": init.rule,
        "steps": init.steps,
        **init.metadata.get("fine_tune", {}),
        "loss": "mse",
        "lr": base_lr * args.rate_scale,
    }
    metadata = {
        **init.metadata,
        "source": f"metadip default init for {_what(args.task)} (Educated DIP on a TV start)",
        "fine_tune": fine_tune,
        "shipped_for": args.task,
        "derived_from": args.source.as_posix(),
        "guide": f"TV-FISTA, {args.iters} iterations, lambda = {args.weight} * sigma",
        "rate_scale": args.rate_scale,
        "ship_commit": commit,
    }
    out = args.out or ROOT / "metadip" / "weights" / f"{args.task}.safetensors"
    # No self-ensemble on a TV start (CS and PR measured level with and without it), even
    # from a source that has one.
    shipped = replace(init, config=config, loss="mse", metadata=metadata, ensemble=1)
    shipped.scaled_rates(args.rate_scale).save(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
