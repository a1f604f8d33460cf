"""``metadip eval``: method × task × image tables and plots, from one command.

Every (patch, task) pair gets one seeded operator and one seeded measurement y, so
every method sees the same y (``problems``). A *cell* is one (patch, task, method),
run by a method adapter (``methods``); each finished cell is appended to
``OUT/results.jsonl`` as soon as it is done, so a rerun skips it (``run``). Then
``table.md``, ``convergence.png`` and ``grid_<task>.png`` are rebuilt from all rows
(``report``). ``cli`` holds the flags.
"""

from metadip.evaluate.cli import add_parser, cmd_eval
from metadip.evaluate.methods import CURVE_STEPS, METHODS, EvalConfig, NotApplicable, Runner
from metadip.evaluate.problems import cell_seed, input_view, load_patches
from metadip.evaluate.report import COLORS, plot_convergence, write_grid, write_table
from metadip.evaluate.run import read_rows, run_eval
from metadip.tasks import DEFAULT_TASKS, INPAINT_RATIO, SR_FACTOR, TaskSpec, parse_task

__all__ = [
    "COLORS",
    "CURVE_STEPS",
    "DEFAULT_TASKS",
    "INPAINT_RATIO",
    "SR_FACTOR",
    "METHODS",
    "EvalConfig",
    "NotApplicable",
    "Runner",
    "TaskSpec",
    "add_parser",
    "cell_seed",
    "cmd_eval",
    "input_view",
    "load_patches",
    "parse_task",
    "plot_convergence",
    "read_rows",
    "run_eval",
    "write_grid",
    "write_table",
]
