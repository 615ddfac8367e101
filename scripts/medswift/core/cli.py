"""The argument parser every command-line tool uses: its docstring's first paragraph as the
description, every option's default in ``--help``, the docstring's usage lines as examples, and
the research-only notice."""
from __future__ import annotations

import argparse
import textwrap

from medswift.core.constants import NOTICE


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _with_default(kwargs: dict) -> dict:
    # argparse prints nothing, default included, for an option without help text
    if not kwargs.get("help") and kwargs.get("default") not in (None, False):
        kwargs["help"] = "default: %(default)s"
    return kwargs


class _Group(argparse._ArgumentGroup):  # noqa: SLF001 - argparse has no public group class to extend
    def add_argument(self, *args, **kwargs):
        return super().add_argument(*args, **_with_default(kwargs))


class CommandParser(argparse.ArgumentParser):
    def add_argument(self, *args, **kwargs):
        return super().add_argument(*args, **_with_default(kwargs))

    def add_argument_group(self, *args, **kwargs):
        group = _Group(self, *args, **kwargs)
        self._action_groups.append(group)
        return group


def usage_examples(doc: str) -> str:
    """The indented lines under ``Usage:`` in a module docstring (the runnable examples)."""
    if "Usage" not in doc:
        return ""
    block = doc.split("Usage", 1)[1].split(":", 1)[1].split("\n\n")[0]
    lines = textwrap.dedent(block.strip("\n")).splitlines()
    return "\n".join(" ".join(line.split()) for line in lines)  # a backslash-continued line arrives padded


def command_parser(doc: str, **kwargs) -> CommandParser:
    examples = usage_examples(doc)
    epilog = (f"examples:\n{textwrap.indent(examples, '  ')}\n\n" if examples else "") + NOTICE
    return CommandParser(description=doc.strip().split("\n\n")[0], epilog=epilog, formatter_class=_Formatter,
                         **kwargs)
