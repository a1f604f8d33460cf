"""``metadip train``: meta-train a DIP initialization (MAML) or pretrain an Educated-DIP one.

``config`` holds the options, ``maml`` and ``educated`` the two loops, ``common``
validation and checkpoints, ``cli`` the command line; ``train`` runs either loop.
"""

from metadip.plots import plot_curves
from metadip.train.cli import add_parser, cmd_train, config_from_args
from metadip.train.common import TrainResult, evaluate, log_points, psnr_curve
from metadip.train.config import METHODS, TrainConfig
from metadip.train.educated import educated_init, train_educated
from metadip.train.maml import train_maml
from metadip.train.run import train

__all__ = [
    "METHODS",
    "TrainConfig",
    "TrainResult",
    "add_parser",
    "cmd_train",
    "config_from_args",
    "educated_init",
    "evaluate",
    "log_points",
    "plot_curves",
    "psnr_curve",
    "train",
    "train_educated",
    "train_maml",
]
