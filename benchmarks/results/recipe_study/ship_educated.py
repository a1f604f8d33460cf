"""Writes a shipped per-task default from an Educated-DIP training run.

    python benchmarks/results/recipe_study/ship_educated.py RUN_DIR --task denoise \\
        --lr 1e-4 --steps 50 [--schedule cosine] [--warmup W] [--init best.safetensors] \\
        [--derived-from "metadip/weights/denoise.safetensors at COMMIT"] [--name NAME] \\
        [--note "what else the file's user should know, e.g. the photos it saw"] \\
        [--ensemble 8] [--average OTHER.safetensors ...]
    python benchmarks/results/recipe_study/ship_educated.py --update FILE --ensemble 8 \\
        --note "why"

The second form changes only the geometric self-ensemble (``MetaInit.ensemble``) of an
already shipped FILE, in place, and records ``--note`` under the metadata's ``ensemble``.

The run's init (``init.safetensors``, or ``--init``) gets the fine-tune rule chosen on the
tuning patches (Adam at ``--lr`` for ``--steps`` steps, constant or decaying to 0 by a
cosine, the first ``--warmup`` steps ramped up (``MetaInit.with_rates``), the run's inner
loss) and its
provenance (training config, data manifest hash, steps, logged seconds, commit, the
validation curve, ``--note``), and is written to ``metadip/weights/<task>.safetensors``
(or ``<NAME>.safetensors``). ``--average`` replaces its weights by their uniform average
with the named inits (``MetaInit.averaged_with``: a soup of sibling runs from one starting
point), each recorded with its hash and training step under ``averaged_with``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import torch

from metadip.init import SCHEDULES, MetaInit, member_record

ROOT = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, nargs="?")
    p.add_argument("--update", type=Path, help="a shipped file whose --ensemble to change")
    p.add_argument("--ensemble", type=int, default=1, help="the final image's self-ensemble")
    p.add_argument("--task")
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--warmup", type=int, default=0, help="steps over which the rate ramps up")
    p.add_argument("--init", default="init.safetensors")
    p.add_argument(
        "--derived-from",
        default=None,
        help="what the run started from, when that file is replaced (e.g. PATH at COMMIT)",
    )
    p.add_argument("--name", default=None, help="file stem in metadip/weights (default: TASK)")
    p.add_argument("--note", default=None, help="stored as the file's metadata 'note'")
    p.add_argument(
        "--average",
        type=Path,
        nargs="+",
        default=[],
        help="inits of the same network (repository-relative) to average the weights with",
    )
    args = p.parse_args(argv)
    if args.update is not None:
        if args.run is not None or not args.note:
            p.error("--update FILE takes no RUN and needs --note (why the ensemble changed)")
        shipped = MetaInit.load(args.update)
        metadata = {**shipped.metadata, "ensemble": {"size": args.ensemble, "note": args.note}}
        return replace(shipped, ensemble=args.ensemble, metadata=metadata).save(args.update)
    if args.run is None or args.task is None or args.lr is None:
        p.error("RUN, --task and --lr are required (or --update FILE)")
    init = MetaInit.load(args.run / args.init)
    records = [json.loads(s) for s in (args.run / "log.jsonl").read_text().splitlines() if s]
    manifest = ROOT.parent / "shared" / "data" / "natural-train" / "MANIFEST.tsv"
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    cfg = init.metadata.get("train_config")
    if cfg is None:  # best.safetensors keeps only the step: the run's config is the same
        cfg = torch.load(args.run / "checkpoint.pt", weights_only=False)["config"]
    metadata = {
        "source": f"metadip default init for task {args.task!r} (Educated DIP)",
        "train_config": cfg,
        "data_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "outer_steps": init.metadata["outer_step"],
        "train_seconds_logged": round(
            sum(r.get("seconds", 0.0) for r in records if r["step"] <= init.metadata["outer_step"]),
            1,
        ),
        "device": cfg["device"],
        "git_commit": commit,
        "fine_tune": {
            "rule": init.rule,
            "lr": args.lr,
            "schedule": args.schedule,
            "warmup": args.warmup,
            "steps": args.steps,
            "loss": init.loss,
        },
        "val_psnr_curve": [
            [r["step"], r["val_pretrained"], r["val_meta"]]
            for r in records
            if "val_meta" in r and r["step"] <= init.metadata["outer_step"]
        ],
    }
    if args.average:
        metadata["averaged_base"] = member_record(args.run / args.init, init)
        others = [MetaInit.load(ROOT / f) for f in args.average]
        init = init.averaged_with(*others)
        metadata["averaged_with"] = [
            member_record(ROOT / f, o, label=str(f))
            for f, o in zip(args.average, others, strict=True)
        ]
    if args.derived_from:
        metadata["derived_from"] = args.derived_from
    if args.note:
        metadata["note"] = args.note
    shipped = replace(
        init.with_rates(args.lr, args.schedule, args.steps, args.warmup),
        metadata=metadata,
        ensemble=args.ensemble,
    )
    name = args.name or args.task
    return shipped.save(ROOT / "metadip" / "weights" / f"{name}.safetensors")


if __name__ == "__main__":
    print(main())
