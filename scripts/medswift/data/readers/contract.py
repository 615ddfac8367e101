"""The reader contract: what a dataset reader of the report converter (convert_xray_swift.py) is.

A reader is a module of ``medswift.data`` holding, at module level:

``NAME``
    the format's name, as ``--format`` spells it and summary.json records it;
``VIEWS``
    whether its records know their view position, so that ``--views`` applies;
``Options``
    the dataclass of what it reads: ``ReaderOptions`` itself, or a subclass whose extra fields
    are the reader's own flags, each declared once with ``flag(help)`` (``--<field name>``, a
    help text that starts ``NAME:``, ``None`` when not given) or ``switch(help)`` (a yes/no flag);
``add_args(parser)``
    adds the reader's own flags to the converter's parser (``add_args = Options.add_args``);
``DATES``, ``CONTEXT`` (optional, default false)
    whether it knows study dates (``--priors``: its study candidates carry ``fields["study_day"]``
    and ``["study_time"]``) and the current report's indication/technique/comparison (``--context``);
``detect(path) -> bool``
    whether ``--input`` is in its format (cheap: a name, a folder layout, a file's first bytes);
``read(options) -> Reading``
    the candidates, one per image or per view of a study (``medswift.data.pipeline.records``): a record
    it cannot use is a candidate with its ``problem`` set, listed as a skip, never an exception;
    an input it cannot read at all is one ``UsageError``.

The converter (``medswift.data.converters.reports``) registers readers in ``READERS``, a plain dict of the
imported modules, tried in its order when the format is detected. Adding a dataset: one reader
module, one line in ``READERS``, one test with a fixture in the dataset's real layout.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

from medswift.data.pipeline.records import Reading


@dataclass(frozen=True)
class ReaderOptions:
    """What every reader is given: ``--input``, ``--images_dir`` and the ``--unit`` asked for
    (a reader whose records are no studies refuses ``study``); ``priors`` and ``context``, the
    converter's --priors/--context, which only a reader declaring ``DATES``/``CONTEXT`` is given
    true (it then reads study dates / the current report's context sections)."""
    input: str
    images_dir: str | None = None
    unit: str | None = None
    priors: bool = False
    context: bool = False

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """``--<name>`` for each field declared with ``flag``: the reader's own flags."""
        for f in fields(cls):
            if "help" in f.metadata:
                parser.add_argument(f"--{f.name}", help=f.metadata["help"], **f.metadata.get("argparse", {}))

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The options of this class from the parsed command line (a flag not given is ``None``)."""
        return cls(**{f.name: getattr(args, f.name, None) for f in fields(cls)})


class Reader(Protocol):
    """A reader module (see the module docstring); modules satisfy it structurally."""
    NAME: str
    VIEWS: bool
    Options: type[ReaderOptions]

    def add_args(self, parser: argparse.ArgumentParser) -> None: ...

    def detect(self, path: Path) -> bool: ...

    def read(self, options: ReaderOptions) -> Reading: ...


def flag(help: str):  # noqa: A002 - argparse's own name for it
    """A field of a reader's ``Options`` that is also its flag ``--<field name>`` (text, or None)."""
    return field(default=None, metadata={"help": help})


def switch(help: str):  # noqa: A002 - argparse's own name for it
    """A yes/no field of a reader's ``Options`` that is also its flag ``--<field name>`` (off unless given)."""
    return field(default=False, metadata={"help": help, "argparse": {"action": "store_true"}})
