"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)


def test_ci_runs_the_readme_test_command():
    tests = [c for c in _commands() if "pytest" in c]
    assert len(tests) == 1, tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests[0] in ci_lines


def test_readme_demo_command_runs_the_demo():
    demos = [c for c in _commands() if c.endswith("metadip demo")]
    assert len(demos) == 1
    assert "torch==2.13.0" in demos[0]
