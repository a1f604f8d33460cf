"""One entry point for every training method."""

from __future__ import annotations

from metadip.train.common import TrainResult
from metadip.train.config import TrainConfig
from metadip.train.distributed import launched_world
from metadip.train.educated import train_educated
from metadip.train.maml import train_maml

__all__ = ["train"]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Runs (or, with ``resume``, continues) ``cfg.method`` into ``cfg.out``."""
    if cfg.method == "educated" and launched_world() > 1:
        raise ValueError(
            "data-parallel training (torchrun) covers --method maml; run the educated "
            "pretraining in one process"
        )
    loop = train_educated if cfg.method == "educated" else train_maml
    return loop(cfg, resume=resume, progress=progress)
