"""``run_eval``: every unfinished (patch, task, method) cell, appended to
``OUT/results.jsonl`` as soon as it is done (a rerun skips finished cells and retries
failed ones), then the report rebuilt from all rows."""

from __future__ import annotations

import contextlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metadip import io
from metadip.evaluate.methods import METHODS, EvalConfig, NotApplicable, Runner
from metadip.evaluate.problems import cell_seed, input_view, load_patches
from metadip.evaluate.report import image_stem, plot_convergence, slug, write_grid, write_table
from metadip.metrics import psnr, ssim
from metadip.operators import Operator
from metadip.posterior import check_samples
from metadip.tasks import parse_task

__all__ = ["cell_key", "read_rows", "run_eval"]

FINISHED = ("ok", "skipped")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("metadip", "numpy", "bm3d", "deepinv"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def _device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def cell_key(row: dict[str, Any]) -> tuple[str, str, str, int, int]:
    """(patch, task, method, size, samples): what makes a cell."""
    return (row["patch"], row["task"], row["method"], int(row["size"]), row_samples(row))


def row_samples(row: dict[str, Any]) -> int:
    """The chains per fit of a row (rows written before ``--samples`` existed: 1)."""
    return int(row.get("samples", 1))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl; a later row for the same cell replaces an earlier one.
    A truncated last line (a run killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[cell_key(row)] = row
    return list(rows.values())


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs every unfinished cell, appends it to ``OUT/results.jsonl``, then writes the
    table and plots from all rows. Returns the rows of this configuration."""
    specs = [parse_task(t) for t in cfg.tasks]
    check_samples(cfg.samples)
    for m in cfg.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {cell_key(r) for r in read_rows(results) if r.get("status") in FINISHED}
    patches = load_patches(cfg.images, cfg.patches, cfg.size, cfg.seed, cfg.resolved_split)
    runner = Runner(cfg)
    versions = _versions()
    device = _device_name(cfg.device)
    todo = [
        (spec, name, method)
        for spec in specs
        for name, _ in patches
        for method in cfg.methods
        if (name, spec.spec, method, cfg.size, cfg.samples) not in done and not cfg.report_only
    ]
    if len(todo) < len(specs) * len(patches) * len(cfg.methods):
        skipped = len(specs) * len(patches) * len(cfg.methods) - len(todo)
        log(f"resuming: {skipped} finished cell(s) in {results} are kept")
    by_name = dict(patches)
    problems: dict[tuple[str, str], tuple[Operator, Tensor, int]] = {}
    noticed: set[str] = set()
    bar = tqdm(todo, desc="eval", unit="cell", disable=not cfg.progress)
    for spec, name, method in bar:
        bar.set_postfix_str(f"{spec.spec} {name} {method}")
        x = by_name[name]
        if (name, spec.spec) not in problems:
            seed = cell_seed(name, spec.spec)
            op = spec.operator(x.shape, seed)
            y = op.measure(x, torch.Generator().manual_seed(seed))
            problems = {(name, spec.spec): (op, y, seed)}  # keep one (PR matrices are big)
            folder = out / "images" / slug(spec.spec)
            io.save_image(folder / f"{name}_truth.png", x)
            io.save_image(folder / f"{name}_input.png", input_view(op, y))
        op, y, seed = problems[(name, spec.spec)]
        row: dict[str, Any] = {
            "patch": name,
            "task": spec.spec,
            "method": method,
            "size": cfg.size,
            "samples": cfg.samples,
            "images": str(cfg.images),
            "seed": seed,
            "psnr_input": psnr(input_view(op, y), x),
        }
        try:
            res = runner.run(method, spec, x, op, y, seed)
        except NotApplicable as e:
            row.update(status="skipped", reason=str(e))
            if method not in noticed:
                log(f"notice: {method} skipped for {spec.spec}: {e}")
                noticed.add(method)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a failing method is recorded in its cell; the run goes on
            row.update(status="error", error=f"{type(e).__name__}: {e}")
            log(f"{method} failed on {spec.spec} {name}: {type(e).__name__}: {e}")
        else:
            img = res.image.detach().cpu().float().clamp(0, 1)
            stem = out / "images" / slug(spec.spec) / image_stem(name, method, cfg.samples)
            io.save_image(stem.with_name(stem.name + ".png"), img)
            if res.std is not None:
                shown, top = io.std_view(res.std)
                io.save_image(stem.with_name(stem.name + "_std.png"), shown)
                row["std_white"] = top
            row.update(
                status="ok",
                psnr=psnr(img, x),
                ssim=ssim(img, x),
                seconds=res.seconds,
                steps=res.steps,
                curve=res.curve,
                **res.extra,
            )
        row.update(device=device, versions=versions, time=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [
        r
        for r in read_rows(results)
        if r["task"] in cfg.tasks
        and r["method"] in cfg.methods
        and r["size"] == cfg.size
        and row_samples(r) == cfg.samples
    ]
    write_table(rows, out / "table.md", cfg)
    plot_convergence(rows, out / "convergence.png")
    for spec in specs:
        write_grid(rows, out, spec.spec, patches[0][0], cfg.samples)
    log(f"wrote {out / 'table.md'}, {out / 'convergence.png'} and grid_*.png in {out}")
    return rows
