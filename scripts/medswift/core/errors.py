"""The two kinds of failure every tool distinguishes.

``UsageError``: the user's call cannot go on (a missing file, a bad flag, an output that cannot be
written). Shown as one ``error:`` line, exit code 2, no traceback; raised before heavy work
wherever possible.

``Rejected``: one input (an image, a record, a request) cannot be used. The job lists it with its
short, stable ``reason`` (counted in summaries) and a ``detail`` and goes on.
"""
from __future__ import annotations

import sys


class UsageError(Exception):
    """A user mistake: one ``error:`` line, exit code 2."""


class Rejected(ValueError):
    """One unusable input; ``reason`` is a short stable label, ``detail`` says which and why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def run_cli(main_body, *args) -> int:
    """Call ``main_body(*args)``; a UsageError becomes its one ``error:`` line and exit code 2."""
    try:
        return main_body(*args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
