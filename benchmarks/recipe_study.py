"""The recipe study of the shipped default: fixed patches, paired methods, mean ± s.e.

    python benchmarks/recipe_study.py list                 # (re)writes the validation list
    python benchmarks/recipe_study.py run METHOD TASK [--steps 20,50,100] [--patches N]
    python benchmarks/recipe_study.py table [--ref METHOD] [--task TASK]

Patches: ``benchmarks/results/recipe_study/validation.tsv`` — one 128×128 crop (pixel
std ≥ 0.1, so no flat sky) of each of 16 validation-split photos of
``../shared/data/natural-train`` (the split meta-training uses: 10 %, seed 0), chosen
once by a seeded draw and committed.
Tuning uses ``tuning.tsv``, 8 crops of training-split photos, drawn the same way.
Every (patch, task) gets the operator and noise seeds of ``metadip eval``
(``cell_seed``), so every method sees the same y.

METHOD is one of
  ``default``                  the shipped init for the task (``init="default"``)
  ``large``                    its width-128 one (``init="large"``; denoising only)
  ``maml-default``             the shipped general (MetaDIP) init, default.safetensors
  ``educated-default``         the shipped denoising (Educated DIP + SURE) init
  ``init:PATH``                an init file, fitted with its own rule
  ``init:PATH:lr=X``           the same with every learning rate set to X
  ``init:PATH:cos=X``          the same with the rates decaying from X to 0 over the
                               init's horizon (``MetaInit.with_rates(X, "cosine")``)
  ``init:PATH:lr=X:warm=W``    the rate X ramped up over the first W steps
                               (``MetaInit.with_rates(X, warmup=W)``)
  ``init:PATH:scale=X``        the same with every learned rate multiplied by X
                               (``MetaInit.scaled_rates(X)``)
  ``init:PATH:random``         the same network, rule and loss from fresh random
                               weights (seed 0, as dip:): what the pretraining buys
  ``dip:LR[:ema][:wW]``        vanilla DIP on the skip network of width W (default 32,
                               depth 4, the shipped default's): Adam at LR, input jitter
                               1/30, with the 0.99 output EMA when ``ema`` is given
  ``decoder``                  the vanilla Deep Decoder (``init="decoder"``: k = 64,
                               6 layers, Adam 0.01)
  ``tv:W``                     the TV warm start alone (``guide.tv_estimate`` at weight
                               W): its steps are FISTA iterations, one solve per count
  ``bm3d``                     BM3D (denoising only)
  ``noisy``                    the noisy input itself (denoising only)
TASK is a ``metadip eval`` task (``denoise:25``, ``cs:0.25``, ``pr:0.25`` ...), with
``@gray`` appended for the 1-channel (BT.601) version of each patch, or ``custom:NAME``,
an operator of ``study_ops.py`` that metadip sees as a user's own (``task = "custom"``).
``--auto N`` measures ``steps="auto", max_steps=N``: it fits N steps and replays the
stopping rule ``reconstruct`` uses (``metadip.stopping``, the same window and patience)
on the iterates, so one run gives the PSNR of the image ``steps="auto"`` returns, the
step it returns and the step it would have stopped at, the oracle (the best iterate of
all N, known only with the ground truth) and the fixed-count PSNRs at 50, 100, 300, N.
A method is fitted once for the largest step count; the PSNR of the image the fit
would return at each smaller count is read along the way (for an EMA method the
EMA image is used, so the curve equals separate fits). ``--auto`` rows are different:
every value in them, the fixed counts included, is the raw iterate ``f_θ(z)`` (a callback
sees no optimizer state), not an EMA method's EMA image, so for ``dip:…:ema`` their 50 /
100 / 300 / N cells are not those of a separate fit: ``table`` lists them as
``METHOD@iterate`` (``--ref dip:0.01:ema@iterate --ref-steps 1000``), and otherwise
shows, per method, step count and patch, the row appended last. Rows are appended to
``rows.jsonl`` (one per method, task, patch); a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import metadip
from metadip import denoisers
from metadip.data import load_images
from metadip.evaluate import cell_seed, parse_task
from metadip.guide import guide_input, tv_estimate
from metadip.init import MetaInit
from metadip.inner import ensemble_output, prepare
from metadip.loop import StepInfo
from metadip.metrics import PsnrTrack, psnr
from metadip.operators import Operator
from metadip.shipped import load_init
from metadip.stopping import watcher_for
from metadip.tasks import MEASUREMENT_SIGMA, TaskSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import study_ops  # noqa: E402

from benchmarks.provenance import git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "recipe_study"
SIZE = 128
# Shipped files by name (``default`` is whatever init="default" picks for the task).
ALIASES = {
    "maml-default": "init:metadip/weights/default.safetensors",
    "educated-default": "init:metadip/weights/denoise.safetensors",
}
# A task written "denoise:25@gray" runs on the gray (BT.601) version of each patch.
GRAY = "@gray"
GRAY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])
# The label ``table`` gives an --auto row's method (its values are raw iterates).
ITERATE = "@iterate"
# Windows whose variance sequences --auto records (VAR_t for the window ending at t).
WINDOWS = (10, 25, 50, 100)
# Crops flatter than this (sky, walls) are redrawn: they say little about a prior.
MIN_STD = 0.1


def _draw(split: str, n: int, seed: int) -> list[dict]:
    """One seeded non-flat crop per photo (the first n photos of a seeded order)."""
    train, val = load_images("natural", 3, 0.1, 0)
    pool = val if split == "val" else train
    rng = np.random.default_rng(seed)
    names = sorted(pool)
    rng.shuffle(names)
    rows = []
    for name in names:
        a = pool[name]
        if min(a.shape[1:]) < SIZE:
            continue
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        for _ in range(100):
            i = int(torch.randint(0, a.shape[1] - SIZE + 1, (1,), generator=g))
            j = int(torch.randint(0, a.shape[2] - SIZE + 1, (1,), generator=g))
            if float((a[:, i : i + SIZE, j : j + SIZE] / 255.0).std()) >= MIN_STD:
                break
        rows.append({"patch": f"{split}{len(rows):02d}", "file": name, "top": i, "left": j})
        if len(rows) == n:
            break
    return rows


def write_lists() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n, fname in (("val", 16, "validation.tsv"), ("train", 8, "tuning.tsv")):
        rows = _draw(split, n, seed=2026)
        lines = ["patch\tfile\ttop\tleft"] + [
            f"{r['patch']}\t{r['file']}\t{r['top']}\t{r['left']}" for r in rows
        ]
        (OUT / fname).write_text("\n".join(lines) + "\n")
        print(f"wrote {OUT / fname} ({len(rows)} patches)")


def read_list(name: str) -> list[tuple[str, torch.Tensor]]:
    from PIL import Image

    folder = ROOT.parent / "shared" / "data" / "natural-train"
    out = []
    lines = (OUT / name).read_text().splitlines()[1:]
    for line in lines:
        patch, file, top, left = line.split("\t")
        with Image.open(folder / file) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        t, lft = int(top), int(left)
        crop = a[t : t + SIZE, lft : lft + SIZE].transpose(2, 0, 1).copy()
        out.append((patch, torch.from_numpy(crop)))
    return out


def _method_init(method: str, op: Operator, seed: int = 0) -> MetaInit:
    """The init ``method`` names for problems of operator ``op`` (its channels, task and
    linearity pick ``default``)."""
    method = ALIASES.get(method, method)
    channels = op.in_shape[0]
    name, *options = method.split(":")
    if name in ("default", "large", "decoder"):
        init = load_init(name, channels, seed=seed, task=op.task, linear=op.linear)
        return _with_options(init, options, method, seed)
    if method.startswith("init:"):
        parts = method[5:].split(":")
        return _with_options(MetaInit.load(parts[0]), parts[1:], method, seed)
    if method.startswith("dip:"):
        parts = method[4:].split(":")
        lr, width = float(parts[0]), 32
        ema = "ema" in parts[1:]
        for p in parts[1:]:
            if p.startswith("w"):
                width = int(p[1:])
        init = MetaInit.random(channels, width=width, depth=4, steps=1, seed=seed, rule="adam")
        init = init.with_rates(lr)
        return init if ema else replace(init, ema=0.0)
    raise ValueError(f"unknown method {method!r}")


def _with_options(init: MetaInit, options: list[str], method: str, seed: int) -> MetaInit:
    """``init`` changed by a method's ``:``-separated options (``lr=``, ``cos=``,
    ``warm=``, ``scale=``, ``ens=``, ``random``)."""
    lr = None
    for p in options:
        if p.startswith("lr="):
            lr = float(p[3:])
            init = init.with_rates(lr)
        elif p.startswith("cos="):
            init = init.with_rates(float(p[4:]), "cosine")
        elif p.startswith("warm="):
            if lr is None:
                raise ValueError(f"warm=W ramps the rate of an lr=X before it, in {method!r}")
            init = init.with_rates(lr, warmup=int(p[5:]))
        elif p.startswith("scale="):
            init = init.scaled_rates(float(p[6:]))
        elif p.startswith("ens="):
            init = replace(init, ensemble=int(p[4:]))
        elif p == "random":
            init = _fresh_weights(init, seed)
        else:
            raise ValueError(f"unknown init option {p!r} in {method!r}")
    return init


def _fresh_weights(init: MetaInit, seed: int) -> MetaInit:
    """``init`` with its network's weights drawn afresh (torch's default init, seeded)."""
    c = init.config.to_dict()
    core = {k: c.pop(k) for k in ("out_channels", "width", "depth", "num_fourier", "kind")}
    fresh = MetaInit.random(
        core["out_channels"],
        core["width"],
        core["depth"],
        seed=seed,
        num_fourier=core["num_fourier"],
        kind=core["kind"],
        network=c,
    )
    if fresh.weights.keys() != init.weights.keys():
        raise ValueError("a fresh network of this config has other parameters than the file")
    return replace(init, weights=fresh.weights)


def problem(task: str, x: torch.Tensor, patch: str) -> tuple:
    """``(spec, seed, x, op, y)`` of a study cell: TASK (``@gray``: x in BT.601 gray), its
    operator and measurement, both seeded by the patch and task."""
    task, gray = (task[: -len(GRAY)], True) if task.endswith(GRAY) else (task, False)
    if gray:
        x = (GRAY_WEIGHTS.view(3, 1, 1) * x).sum(dim=0, keepdim=True)
    custom = task.startswith(study_ops.PREFIX)
    spec = TaskSpec(task, "custom", MEASUREMENT_SIGMA, 1.0) if custom else parse_task(task)
    seed = cell_seed(patch, spec.spec)
    op = study_ops.custom_operator(task, x.shape, seed) if custom else spec.operator(x.shape, seed)
    return spec, seed, x, op, op.measure(x, torch.Generator().manual_seed(seed))


def run_one(method: str, task: str, x: torch.Tensor, patch: str, steps: list[int]) -> dict:
    spec, _, x, op, y = problem(task, x, patch)
    if method == "noisy":
        if spec.task != "denoise":
            raise ValueError("method 'noisy' is the noisy input of a denoising task")
        return {"psnr": {"0": psnr(y.clamp(0, 1), x)}, "seconds": 0.0}
    if method == "bm3d":
        t0 = time.perf_counter()
        img = denoisers.bm3d_denoise(y, spec.sigma / 255)
        return {"psnr": {"0": psnr(img.clamp(0, 1), x)}, "seconds": time.perf_counter() - t0}
    if method.startswith("tv:"):
        t0 = time.perf_counter()
        weight = float(method[3:])
        curve = {str(n): psnr(tv_estimate(op, y[None], weight, n)[0], x) for n in steps}
        return {"psnr": curve, "seconds": time.perf_counter() - t0}
    init = _method_init(method, op)
    curve: dict[str, float] = {}
    if 0 in steps:  # the initialization's own image, before any step
        guide = guide_input(init.config, op, y[None]) if init.config.guided else None
        params, hyper = prepare(init, tuple(x.shape), guide=guide, problem=(op, y[None]))
        with torch.no_grad():
            curve["0"] = psnr(ensemble_output(params, hyper)[0].clamp(0, 1), x)
        steps = [n for n in steps if n > 0]
    if init.ema > 0:
        # The EMA image after n steps depends on n only through the optimizer state,
        # which a callback does not see: one fit per step count.
        seconds = 0.0
        for n in steps:
            rec = metadip.reconstruct(y, op, init=init, steps=n, seed=0)
            curve[str(n)] = psnr(rec.image.clamp(0, 1), x)
            seconds = rec.seconds
        return {"psnr": curve, "seconds": seconds}
    track = PsnrTrack(x, steps)
    rec = metadip.reconstruct(y, op, init=init, steps=max(steps), seed=0, callback=track)
    curve.update((str(n), value) for n, value in track.curve)
    curve[str(max(steps))] = psnr(rec.image.clamp(0, 1), x)
    return {"psnr": curve, "seconds": rec.seconds, "restored": len(rec.restored)}


def run_auto(method: str, task: str, x: torch.Tensor, patch: str, max_steps: int) -> dict:
    """A ``max_steps`` fit watched by ``steps="auto"``'s rule (module docstring)."""
    spec, _, x, op, y = problem(task, x, patch)
    init = _method_init(method, op)
    watcher = watcher_for(op, 1, max_steps)  # the rule reconstruct(steps="auto") uses
    curve: list[float] = []
    ran = [max_steps]
    # The windowed variance for other windows too, so other (window, patience) rules can
    # be scored on the same run afterwards.
    recent: list[torch.Tensor] = []
    variances: dict[str, list[float]] = {str(w): [] for w in WINDOWS}
    losses: list[float] = []  # the data fit per step, for rules that use the noise level
    # Running sums of x and x² over each window, so VAR_t = mean(S2/w − (S1/w)²) costs
    # O(1) images a step (the population variance WindowedVariance computes).
    sums = {w: [0.0, 0.0] for w in WINDOWS}

    def track(info: StepInfo) -> None:
        image = info.image()
        curve.append(psnr(image[0].clamp(0, 1), x))
        losses.append(info.loss)
        new = image.detach().double()
        recent.append(new)
        for w in WINDOWS:
            s = sums[w]
            s[0], s[1] = s[0] + new, s[1] + new * new
            if len(recent) > w:
                old = recent[-w - 1]
                s[0], s[1] = s[0] - old, s[1] - old * old
            if len(recent) >= w:
                mean = s[0] / w
                variances[str(w)].append(float((s[1] / w - mean * mean).mean()))
        del recent[: -max(WINDOWS) - 1]
        if not watcher.done:
            watcher.update(image, info.step + 1, info.losses)
            if watcher.done:
                ran[0] = info.step + 1

    rec = metadip.reconstruct(y, op, init=init, steps=max_steps, callback=track)
    best = max(range(len(curve)), key=curve.__getitem__)
    found = watcher.found[0]
    chosen = watcher.best_steps[0] if found else max_steps
    fixed = {str(n): curve[n - 1] for n in sorted({50, 100, 300, max_steps}) if n <= max_steps}
    return {
        "psnr": {"auto": curve[chosen - 1], "oracle": curve[best], **fixed},
        "stopped_at": chosen,
        "ran": ran[0],
        "oracle_step": best + 1,
        "max_steps": max_steps,
        "seconds": rec.seconds,
        "curve": [round(v, 3) for v in curve],
        "variance": variances,
        "loss": [float(f"{v:.6g}") for v in losses],
        "sigma": float(op.sigma or 0.0),
    }


def _done(path: Path) -> set[tuple[str, str, str, str]]:
    """(method, task, patch, step counts) of the rows already in ``path``."""
    if not path.is_file():
        return set()
    rows = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return {(r["method"], r["task"], r["patch"], ",".join(sorted(r["psnr"]))) for r in rows}


def provenance(threads: int) -> dict:
    """What a recorded row carries besides its numbers: threads, load, commit, versions."""
    return {
        "threads": threads,
        "load": os.getloadavg()[0],
        "commit": git_commit(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    rows_path = OUT / args.rows
    if not rows_path.parent.is_dir():  # fail before the first fit, not after it
        raise SystemExit(f"--rows {args.rows}: a file in {OUT}; {rows_path.parent} is no folder")
    done = _done(rows_path)
    steps = sorted({int(s) for s in args.steps.split(",")})
    key = ",".join(sorted(str(n) for n in steps)) if args.method not in ("bm3d", "noisy") else "0"
    if args.auto:
        fixed = {str(n) for n in (50, 100, 300, args.auto) if n <= args.auto}
        key = ",".join(sorted(["auto", "oracle", *fixed]))
    patches = read_list(args.list)[: args.patches]
    for patch, x in patches:
        if (args.method, args.task, patch, key) in done:
            continue
        if args.auto:
            res = run_auto(args.method, args.task, x, patch, args.auto)
        else:
            res = run_one(args.method, args.task, x, patch, steps)
        row = {
            "method": args.method,
            "task": args.task,
            "patch": patch,
            **res,
            **provenance(args.threads),
        }
        with open(rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        shown = ", ".join(f"{k}: {v:.2f}" for k, v in res["psnr"].items())
        print(f"{args.method} {args.task} {patch}: {shown} ({res['seconds']:.1f} s)", flush=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def cmd_table(args: argparse.Namespace) -> None:
    rows = _rows(OUT / args.rows)
    if args.patches:
        # Only the first N patches of --list, so every row's mean is over the same patches.
        with open(OUT / args.list) as f:
            keep = {line.split("\t")[0] for line in f.read().splitlines()[1 : args.patches + 1]}
        rows = [r for r in rows if r["patch"] in keep]
    tasks = sorted({r["task"] for r in rows}) if args.task is None else [args.task]
    lines: list[str] = []
    emit = lines.append
    for task in tasks:
        cells: dict[tuple[str, str], dict[str, float]] = {}
        for r in rows:
            if r["task"] == task:
                # An --auto row's values are raw iterates, not the method's returned image.
                method = r["method"] + (ITERATE if "ran" in r else "")
                for n, v in r["psnr"].items():
                    cells.setdefault((method, n), {})[r["patch"]] = v
        ref = cells.get((args.ref, args.ref_steps), {}) if args.ref else {}
        emit(f"\n### {task}\n")
        head = "| method | steps | patches | PSNR mean ± s.e. |"
        sep = "|---|---:|---:|---:|"
        if ref:
            head += f" paired Δ vs {args.ref} ({args.ref_steps}) |"
            sep += "---:|"
        emit(head + "\n" + sep)
        for (method, n), vals in sorted(cells.items(), key=_order):
            v = np.array(list(vals.values()))
            line = f"| {method} | {n} | {len(v)} | {v.mean():.2f} ± {_se(v):.2f} |"
            if ref:
                common = sorted(set(vals) & set(ref))
                if common:
                    d = np.array([vals[p] - ref[p] for p in common])
                    line += f" {d.mean():+.2f} ± {_se(d):.2f} ({len(d)}) |"
                else:
                    line += " — |"
            emit(line)
    auto_rows = [r for r in rows if "ran" in r and (args.task is None or r["task"] == args.task)]
    if auto_rows:
        emit("\n### steps='auto'\n")
        emit("| method | task | patches | steps run | chosen step | oracle step | stopped early |")
        emit("|---|---|---:|---:|---:|---:|---:|")
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in auto_rows:
            groups.setdefault((r["method"], r["task"]), []).append(r)
        for (method, task), rs in sorted(groups.items()):
            ran = np.array([r["ran"] for r in rs])
            early = sum(r["ran"] < r["max_steps"] for r in rs)
            emit(
                f"| {method} | {task} | {len(rs)} | {ran.mean():.0f} ± {_se(ran):.0f} | "
                f"{np.mean([r['stopped_at'] for r in rs]):.0f} | "
                f"{np.mean([r['oracle_step'] for r in rs]):.0f} | {early} of {len(rs)} |"
            )
    text = "\n".join(lines).lstrip("\n") + "\n"
    print(text)
    if args.out:
        (OUT / args.out).write_text(text)  # like --rows, relative to the study folder


def _order(item: tuple) -> tuple:
    """Rows by method, then step count (numbers first, then auto / oracle)."""
    (method, n), _ = item
    return (method, 0, int(n), "") if n.isdigit() else (method, 1, 0, n)


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    r = sub.add_parser("run")
    r.add_argument("method")
    r.add_argument("task")
    r.add_argument("--steps", default="20,30,50,70,100")
    r.add_argument("--patches", type=int, default=16)
    r.add_argument("--list", default="validation.tsv")
    r.add_argument("--rows", default="rows.jsonl")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument(
        "--auto", type=int, default=0, help="steps='auto' with this max_steps (psnr: auto/oracle)"
    )
    t = sub.add_parser("table")
    t.add_argument("--rows", default="rows.jsonl")
    t.add_argument("--task", default=None)
    t.add_argument("--ref", default=None)
    t.add_argument("--ref-steps", default="50")
    t.add_argument(
        "--out", default=None, help="also write the tables to this file (in the study folder)"
    )
    t.add_argument("--patches", type=int, default=0, help="only the first N patches of --list")
    t.add_argument("--list", default="validation.tsv")
    args = p.parse_args(argv)
    if args.cmd == "list":
        write_lists()
    elif args.cmd == "run":
        cmd_run(args)
    else:
        cmd_table(args)


if __name__ == "__main__":
    sys.exit(main())
