"""benchmarks/kernel_history.py: appending is idempotent, the table compares within a run."""

from __future__ import annotations

import json

import pytest

from benchmarks import kernel_history as kh


def _report(when: str, medians: dict[str, float]) -> dict:
    return {
        "datetime": when,
        "commit_info": {"id": "abcdef1234567", "dirty": False},
        "benchmarks": [
            {
                "group": "tv-fwd-B1",
                "name": f"test_tv[{backend}]",
                "extra_info": {"backend": backend, "device": "cpu", "threads": 2},
                "stats": {"min": m / 2, "median": m, "mean": m, "rounds": 5},
            }
            for backend, m in medians.items()
        ],
    }


def test_append_is_idempotent_and_the_table_uses_the_latest_run(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_report("2026-01-01T00:00", {"torch": 4e-3, "cpp": 1e-3})))
    new.write_text(json.dumps(_report("2026-02-01T00:00", {"torch": 6e-3, "cpp": 2e-3})))
    history = tmp_path / "h.csv"
    assert kh.append([old], history) == 2
    assert kh.append([old, new], history) == 2  # the old rows are not added again
    rows = kh.read_history(history)
    assert len(rows) == 4 and rows[0]["median_ms"] == "4"
    text = kh.table(rows)
    assert "| tv-fwd-B1 | cpu | cpp | — | 2 | 3.00× |" in text and "2026-01-01" not in text
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{kh.START}\nold table\n{kh.END}\nb\n")
    kh.write_readme(readme, text)
    assert readme.read_text() == f"a\n{kh.START}\n{text}\n{kh.END}\nb\n"
    with pytest.raises(SystemExit, match="markers"):
        kh.write_readme(old, text)
