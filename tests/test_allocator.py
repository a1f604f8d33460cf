"""metadip.allocator: glibc's thresholds raised keep freed tensor memory for reuse, and
the command applies them unless METADIP_MALLOC says not to."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from metadip import allocator, cli

# Rounds of 1-4 MiB tensors, some alive across others (a fitting step's pattern in small):
# the minor page faults per round after a warm-up round.
_PATTERN = """
import resource, sys, torch
if sys.argv[1] == "1":
    from metadip.allocator import tune_allocator
    assert tune_allocator()[0]
def one_round():
    keep = []
    for i in range(12):
        keep.append(torch.ones((1 + i % 4) << 18))
        if i % 3 == 2:
            keep.pop(0)
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_round()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)


def _faults(tuned: bool) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PATTERN, str(int(tuned))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


@glibc
def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_them_in_again():
    plain = _faults(False)
    if plain < 256:  # under 1 MiB of fresh pages a round: this libc keeps them anyway
        pytest.skip(f"the plain allocator already reuses these blocks ({plain} faults a round)")
    tuned = _faults(True)
    assert tuned < plain / 4, (plain, tuned)


@glibc
def test_tune_allocator_reports_what_it_set():
    # In a child: the setting is process-wide.
    code = "from metadip.allocator import tune_allocator; print(tune_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"(True, 'mmap threshold {allocator.MMAP_THRESHOLD} B, " + (
        f"trim threshold {allocator.TRIM_THRESHOLD} B')"
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mmap_threshold": 0}, "mmap_threshold"),
        ({"mmap_threshold": allocator.MMAP_THRESHOLD + 1}, "ceiling"),
        ({"trim_threshold": 2**31}, "trim_threshold"),
    ],
)
def test_bad_thresholds_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        allocator.tune_allocator(**kw)


@pytest.mark.parametrize("value, calls", [("0", 0), ("off", 0), ("1", 1), (None, 1)])
def test_the_command_tunes_unless_told_not_to(monkeypatch, value, calls):
    seen = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: seen.append(1) or (True, ""))
    if value is None:
        monkeypatch.delenv(allocator.ENV, raising=False)
    else:
        monkeypatch.setenv(allocator.ENV, value)
    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    args.func = lambda a: 0
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(args))
    assert cli.main(["demo"]) == 0
    assert len(seen) == calls


def test_a_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "maybe")
    with pytest.raises(SystemExit, match="METADIP_MALLOC must be 1/on or 0/off, got 'maybe'"):
        cli.main(["demo"])


class _Fixed:
    """A parser stand-in that returns parsed arguments whose command does nothing."""

    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args
