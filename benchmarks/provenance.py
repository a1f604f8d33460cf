"""The commit a benchmark ran at, for its recorded results (a leaf module: the scripts
import it as ``benchmarks.provenance`` with the repository root on ``sys.path``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = ROOT) -> str:
    """Short hash of HEAD of the checkout at ``root`` (this one by default), ``+dirty``
    when tracked files differ from it; ``unknown`` outside a git checkout (a copy without
    ``.git``, or no git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "diff", "--quiet"], cwd=root, capture_output=True)
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
