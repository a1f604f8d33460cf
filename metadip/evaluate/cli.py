"""``metadip eval``: its flags and entry point."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from metadip.evaluate.methods import METHODS, EvalConfig
from metadip.evaluate.problems import SPLITS
from metadip.evaluate.run import run_eval
from metadip.tasks import DEFAULT_TASKS

__all__ = ["add_parser", "cmd_eval"]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``metadip eval`` on the CLI's subparsers."""
    d = EvalConfig()
    p = sub.add_parser(
        "eval",
        help="method x task x patch tables and plots (the paper's Tables 1-3)",
        description="method x task x patch tables and plots: results.jsonl, table.md, "
        "convergence.png and grid_<task>.png in --out (a rerun resumes)",
    )
    # dest eval_tasks: the CLI checks args.tasks against the single-task names
    p.add_argument(
        "--tasks",
        dest="eval_tasks",
        type=_csv,
        default=list(DEFAULT_TASKS),
        help="comma-separated (default: " + ",".join(DEFAULT_TASKS) + ")",
    )
    p.add_argument(
        "--methods",
        type=_csv,
        default=d.methods,
        help=f"comma-separated from {','.join(METHODS)} (default: {','.join(d.methods)})",
    )
    p.add_argument(
        "--images",
        default=d.images,
        help="your image folder (every image, centre-cropped to --size), 'natural' "
        "(../shared/data/natural-train) or 'skimage' (default; these two: validation crops)",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="val: seeded crops of the held-out files, as in training (default for "
        "'natural' / 'skimage'); train: of the training files; all: every image of the "
        "folder (default for any other folder)",
    )
    p.add_argument(
        "--patches",
        type=int,
        default=None,
        help="crops for val / train (default 6); with all, the first N images (default: all)",
    )
    p.add_argument("--size", type=int, default=d.size, help="patch / crop size (pixels)")
    p.add_argument("--out", default=d.out, help="output folder (results.jsonl, table.md, plots)")
    p.add_argument("--init", default=d.init, help="metadip: 'default' or an init file")
    p.add_argument("--siren-init", default=None, help="metasiren: a SIREN init file")
    p.add_argument(
        "--classical-init",
        default=None,
        help="meta-classical / solver / solver-converged: an init with a classical solver",
    )
    p.add_argument(
        "--converged-iters",
        type=int,
        default=EvalConfig.converged_iters,
        help="solver-converged: iterations of the plain solver (default 300)",
    )
    p.add_argument(
        "--educated-init",
        default=None,
        help="educated: an Educated-DIP init file (default: the task's shipped one)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="metadip / metasiren / educated steps (default 50)"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=d.samples,
        help="K > 1: DIP-type methods return the posterior mean of K Langevin chains, and "
        "the grids show each one's per-pixel std (default 1)",
    )
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed, help="patch sampling seed")
    p.add_argument("--tune-patches", type=int, default=d.tune_patches)
    p.add_argument("--tune-size", type=int, default=d.tune_size, help="PnP-ADMM tuning size")
    p.add_argument(
        "--denoiser",
        default=d.denoiser,
        help="PnP-ADMM denoiser: bm3d, gaussian, dncnn (shipped), or module:attr / file.py:attr",
    )
    p.add_argument("--denoiser-weights", default=None, help="state_dict for --denoiser")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild table.md and the plots from OUT/results.jsonl",
    )
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.converged_iters < 1:
        raise ValueError(f"--converged-iters must be >= 1, got {args.converged_iters}")
    if (args.patches is not None and args.patches < 1) or args.size < 8:
        raise ValueError(f"need --patches >= 1 and --size >= 8, got {args.patches}, {args.size}")
    cfg = EvalConfig(
        tasks=args.eval_tasks,
        methods=args.methods,
        images=args.images,
        split=args.split,
        patches=args.patches,
        size=args.size,
        out=args.out,
        init=args.init,
        siren_init=args.siren_init,
        classical_init=args.classical_init,
        converged_iters=args.converged_iters,
        educated_init=args.educated_init,
        steps=args.steps or 50,
        samples=args.samples,
        device=args.device,
        seed=args.seed,
        tune_patches=args.tune_patches,
        tune_size=args.tune_size,
        denoiser=args.denoiser,
        denoiser_weights=args.denoiser_weights,
        progress=not args.no_progress,
        report_only=args.report_only,
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    run_eval(cfg, log=log)
    return 0
