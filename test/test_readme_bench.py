"""The manual's benchmark commands (docs/benchmarks.md and any other page), run as written in their
own scratch checkout (see test_readme.py for the rules): they print ratios, so they must at least
run here."""
from __future__ import annotations

import pytest

from helpers import BENCHMARKS, run_readme_command


def test_the_benchmarks_block_is_found():
    assert len(BENCHMARKS) >= 3 and all(" bench/" in c for c in BENCHMARKS)


@pytest.mark.parametrize("command", BENCHMARKS, ids=range(len(BENCHMARKS)))
def test_readme_benchmark(command, checkout):
    run_readme_command(command, checkout)
