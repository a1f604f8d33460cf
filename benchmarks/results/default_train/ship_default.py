"""Writes metadip/weights/default.safetensors from a training run's init.

    python benchmarks/results/default_train/ship_default.py RUN_DIR

The init is extended to the 50-step inference horizon (steps past the trained
horizon reuse its last step's rates) and stamped with where it came from.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from metadip.init import MetaInit
from metadip.shipped import default_init_path

INFERENCE_STEPS = 50


def main(run: Path) -> Path:
    init = MetaInit.load(run / "init.safetensors")
    cfg = init.metadata["train_config"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    seconds = sum(r.get("seconds", 0.0) for r in records)
    manifest = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "natural-train"
    manifest = manifest / "MANIFEST.tsv"
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    metadata = {
        "source": "metadip default init",
        "train_config": cfg,
        "warm_start": cfg.get("init_from", ""),
        "data_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "outer_steps": init.metadata["outer_step"],
        "inner_horizon": cfg["steps"],
        "inference_steps": INFERENCE_STEPS,
        "train_seconds_logged": round(seconds, 1),
        "device": cfg["device"],
        "git_commit": commit,
        "val_psnr_curve": [[r["step"], r["val_meta"]] for r in records if "val_meta" in r],
        "val_psnr_random": next((r["val_random"] for r in records if "val_random" in r), None),
    }
    shipped = replace(init.with_steps(INFERENCE_STEPS), metadata=metadata)
    return shipped.save(default_init_path())


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
