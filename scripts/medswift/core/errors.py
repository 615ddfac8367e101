"""The two kinds of failure every tool distinguishes.

``UsageError``: the user's call cannot go on (a missing file, a bad flag, an output that cannot be
written). Shown as one ``error:`` line, exit code 2, no traceback; raised before heavy work
wherever possible.

``Rejected``: one input (an image, a record, a request) cannot be used. The job lists it with its
short, stable ``reason`` (counted in summaries) and a ``detail`` and goes on.
"""
from __future__ import annotations

import re
import sys


class UsageError(Exception):
    """A user mistake: one ``error:`` line, exit code 2."""


class Rejected(ValueError):
    """One unusable input; ``reason`` is a short stable label, ``detail`` says which and why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def one_line(text, limit: int = 300) -> str:
    """An error text for a user, a client or a log: one line, bounded, without memory addresses
    (``<_io.BytesIO object at 0x7f...>`` tells a client about this process's memory)."""
    text = re.sub(r"\s+(object\s+)?at\s+0x[0-9a-fA-F]+", "", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` in one bounded line (just ``Type`` when the message is empty)."""
    text = one_line(exc, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_cli(main_body, *args) -> int:
    """Every tool's ``main``: call ``main_body(*args)``; a UsageError, or a file or folder the
    system refused (OSError), becomes one ``error:`` line and exit code 2, never a traceback."""
    try:
        return main_body(*args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{one_line(exc.strerror or exc)}", file=sys.stderr)
    return 2
