"""Command line: ``metadip demo``, ``reconstruct`` and ``average`` (``train`` and ``eval``
live in their packages)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

import torch

from metadip import allocator, evaluate, io, train
from metadip.api import reconstruct
from metadip.dihedral import ENSEMBLE_SIZES
from metadip.init import MetaInit, member_record
from metadip.metrics import psnr, ssim
from metadip.operators import Inpainting, Operator
from metadip.shipped import default_init_path
from metadip.tasks import TASKS, make_operator

DEMO_TASKS = ("denoise", "cs", "pr")


def _init_choice(init: str) -> str:
    """``default`` falls back to vanilla DIP, with a notice, while no trained default ships."""
    if init == "default" and not default_init_path().is_file():
        print(
            "notice: no trained default initialization is installed in this copy of metadip; "
            "running vanilla DIP (random init, Adam, 1000 steps) instead. "
            "Pass --init PATH to use a trained init.",
            file=sys.stderr,
        )
        return "random"
    return init


def _view(op: Operator, y: torch.Tensor) -> torch.Tensor:
    """Something image-shaped to show for a measurement: y itself or the back-projection."""
    if tuple(y.shape) == op.in_shape:
        return y
    if op.linear:
        return op.adjoint(y)
    return torch.zeros(op.in_shape)


def cmd_demo(args: argparse.Namespace) -> int:
    x = io.bundled_patch(args.image, args.size)
    init = _init_choice(args.init)
    panels = [("ground truth", x)]
    print(f"{args.image} patch {tuple(x.shape)}, init={init}")
    print(f"{'task':<10}{'PSNR in':>9}{'PSNR':>8}{'SSIM':>8}{'steps':>7}{'seconds':>9}  init")
    for i, task in enumerate(args.tasks):
        op = make_operator(task, x.shape, sigma=args.sigma / 255, ratio=args.ratio, seed=args.seed)
        y = op.measure(x, torch.Generator().manual_seed(args.seed + i))
        rec = reconstruct(
            y,
            op,
            init=init,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            progress=True,
            samples=args.samples,
            ensemble=args.ensemble,
        )
        view = _view(op, y)
        p_in = (
            f"{psnr(view.clamp(0, 1), x):9.2f}" if view.shape == x.shape and op.linear else " " * 9
        )
        print(
            f"{task:<10}{p_in}{psnr(rec.image, x):8.2f}{ssim(rec.image, x):8.3f}"
            f"{rec.steps:7d}{rec.seconds:9.2f}  {rec.init}"
        )
        if task == "denoise":
            panels.append(("noisy", view))
        panels.append((f"{task} {psnr(rec.image, x):.1f} dB", rec.image))
        if rec.std is not None:
            shown, top = io.std_view(rec.std)
            panels.append((f"{task} std (0-{top:.3f})", shown))
    out = io.save_grid(args.out, panels)
    print(f"wrote {out}")
    return 0


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--shape must be C,H,W (integers), got {text!r}") from None


def cmd_reconstruct(args: argparse.Namespace) -> int:
    sigma = args.sigma / 255
    if args.simulate:
        x = io.load_image(args.input)
        op = make_operator(
            args.task, x.shape, sigma=sigma, ratio=args.ratio, seed=args.seed, factor=args.factor
        )
        y = op.measure(x, torch.Generator().manual_seed(args.seed))
    else:
        x = None
        op, y = _measurement(args, sigma)
    rec = reconstruct(
        y,
        op,
        init=_init_choice(args.init),
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        progress=True,
        samples=args.samples,
        ensemble=args.ensemble,
    )
    io.save_image(args.out, rec.image)
    if args.std_out:
        # .npy / gray .tif keep the values; an 8-bit image is scaled so its maximum is white.
        raw = args.std_out.lower().endswith((".npy", ".tif", ".tiff"))
        shown, top = (rec.std, 0.0) if raw else io.std_view(rec.std)
        io.save_image(args.std_out, shown)
        print(f"std map -> {args.std_out}" + ("" if raw else f" (white = {top:.4f})"))
    line = f"{args.task}: {rec.steps} steps in {rec.seconds:.2f} s -> {args.out}"
    if x is not None:
        line += f"  PSNR {psnr(rec.image, x):.2f} dB  SSIM {ssim(rec.image, x):.3f}"
    print(line)
    return 0


def _measurement(args: argparse.Namespace, sigma: float) -> tuple[Operator, torch.Tensor]:
    """Operator and y when INPUT is the measurement itself."""
    if args.task in ("cs", "pr"):
        shape = _parse_shape(args.shape)
        if shape is None:
            raise SystemExit(
                f"--task {args.task} on a measurement needs --shape C,H,W of the image"
            )
        y = io.load_array(args.input)
        return make_operator(args.task, shape, sigma=sigma, ratio=args.ratio, seed=args.seed), y
    y = io.load_image(args.input)
    if args.task == "sr":
        c, h, w = y.shape
        shape = (c, h * args.factor, w * args.factor)
        return make_operator("sr", shape, sigma=sigma, factor=args.factor), y
    if args.task == "inpaint":
        if args.mask is None:
            raise SystemExit("--task inpaint on a measurement needs --mask PATH (observed > 0.5)")
        mask = io.load_image(args.mask)[0] > 0.5
        if tuple(mask.shape) != tuple(y.shape[1:]):
            raise SystemExit(f"mask is {tuple(mask.shape)} but the image is {tuple(y.shape[1:])}")
        op = Inpainting.from_mask(mask, channels=y.shape[0], sigma=sigma)
        return op, op.forward(y)
    return make_operator(args.task, y.shape, sigma=sigma, ratio=args.ratio, seed=args.seed), y


def cmd_average(args: argparse.Namespace) -> int:
    """Writes the weight average of the input inits (``MetaInit.averaged_with``)."""
    if len(args.inputs) < 2:
        raise ValueError(f"average needs at least two init files, got {len(args.inputs)}")
    first, *others = (MetaInit.load(f) for f in args.inputs)
    metadata = {
        **first.metadata,
        "averaged_base": member_record(args.inputs[0], first),
        "averaged_with": [
            member_record(f, m) for f, m in zip(args.inputs[1:], others, strict=True)
        ],
    }
    path = replace(first.averaged_with(*others), metadata=metadata).save(args.out)
    print(
        f"wrote {path}: the weights of {len(args.inputs)} inits averaged; "
        f"rates, rule and ensemble from {args.inputs[0]}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metadip", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--init",
            default="default",
            help="default | large (denoising only) | random | decoder | PATH (default: default)",
        )
        q.add_argument(
            "--steps",
            type=int,
            default=None,
            help="fitting steps (default: the init's; 0: its image unfitted)",
        )
        q.add_argument("--seed", type=int, default=0)
        q.add_argument(
            "--samples",
            type=int,
            default=1,
            help="K > 1: posterior mean of K Langevin chains and a per-pixel std (default 1)",
        )
        q.add_argument(
            "--ensemble",
            type=int,
            choices=ENSEMBLE_SIZES,
            default=None,
            help="average the fitted network over N flips/rotations of its input image "
            "(default: the init's own, 8 for the denoising and inpainting defaults)",
        )
        q.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
        q.add_argument("--sigma", type=float, default=25.0, help="noise std on the 0-255 scale")
        q.add_argument(
            "--ratio", type=float, default=0.25, help="m/n for cs/pr, observed fraction for inpaint"
        )

    d = sub.add_parser("demo", help="reconstruct a bundled photo for denoise, cs and pr")
    common(d)
    d.add_argument("--image", default="astronaut", choices=io.BUNDLED)
    d.add_argument("--size", type=int, default=128)
    d.add_argument(
        "--tasks",
        type=lambda s: s.split(","),
        default=list(DEMO_TASKS),
        help="comma-separated, from " + ",".join(TASKS),
    )
    d.add_argument("--out", default="metadip-demo.png")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("reconstruct", help="reconstruct an image file")
    r.add_argument("input", help="measurement (image or .npy), or the clean image with --simulate")
    r.add_argument("--task", required=True, choices=TASKS)
    common(r)
    r.add_argument("--factor", type=int, default=2, help="super-resolution factor")
    r.add_argument("--shape", default=None, help="C,H,W of the image (cs/pr measurements)")
    r.add_argument("--mask", default=None, help="observed-pixel mask image (inpaint)")
    r.add_argument(
        "--simulate",
        action="store_true",
        help="INPUT is the clean image: simulate the measurement and report PSNR",
    )
    r.add_argument("--out", required=True, help="output .png, .tif or .npy")
    r.add_argument(
        "--std-out", default=None, help="write the per-pixel std (needs --samples K > 1) here"
    )
    r.set_defaults(func=cmd_reconstruct)
    a = sub.add_parser("average", help="average the weights of inits of one network (a model soup)")
    a.add_argument("inputs", nargs="+", help="init files; rates, rule and ensemble: the first's")
    a.add_argument("--out", required=True, help="the averaged init's .safetensors")
    a.set_defaults(func=cmd_average)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if allocator.wanted():
            # A command owns its process: keep freed tensor memory for reuse (page faults
            # took a third of a SURE fitting step; metadip.allocator).
            allocator.tune_allocator()
    except ValueError as e:
        raise SystemExit(f"metadip: {e}") from None
    for task in getattr(args, "tasks", []):
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if getattr(args, "steps", None) is not None and args.steps < 0:
        raise SystemExit(f"--steps must be >= 0 (0: the init's image unfitted), got {args.steps}")
    if getattr(args, "samples", 1) < 1:
        raise SystemExit(f"--samples must be >= 1, got {args.samples}")
    if getattr(args, "std_out", None) and getattr(args, "samples", 1) < 2:
        raise SystemExit("--std-out needs --samples K with K >= 2 (the std is over chains)")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"metadip {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
