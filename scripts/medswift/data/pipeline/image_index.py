"""Where the images are: the file-name index of the images folders, and path resolution that
stats each folder once (the largest cost of a re-run at MIMIC-CXR's size)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from medswift.core.constants import IMAGE_SUFFIXES
from medswift.core.errors import UsageError
from medswift.core.files import may_be_file


def index_images(images_dirs: list[Path] | Path) -> dict[str, Path]:
    """Map file name and stem to a path (one scandir per folder, not a stat per record).

    Several folders may be given (HAM10000 ships two parts, ChestX-ray14 twelve); a name
    found in two folders keeps the first.
    """
    dirs = [images_dirs] if isinstance(images_dirs, (str, Path)) else list(images_dirs)
    index: dict[str, Path] = {}
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise UsageError(f"images folder not found: {folder}")
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not may_be_file(entry):  # a symlink loop is indexed: its check lists it, with why
                continue
            path = Path(entry.path)
            index.setdefault(entry.name, path)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.stem, path)
    return index


class FolderCachedResolve:
    """``str(Path(path).resolve())``, with each folder resolved once instead of once per file.

    ``Path.resolve`` walks every component with an lstat (nine for a MIMIC-CXR image), which at
    377,110 images was the largest cost of a re-run. A folder's real path is kept (most recent
    folders only, so memory stays flat) and a file is then one lstat: real(folder/name) is
    real(folder)/name whenever name is no symlink. Anything else (a symlink, a relative or
    unnormalised path) takes ``Path.resolve`` itself, so the answer and its errors (a symlink
    loop, a NUL byte) are the same."""

    def __init__(self, keep: int = 4096):
        self.folders: dict[str, str] = {}
        self.keep = keep

    def __call__(self, path) -> str:
        text = os.fspath(path)
        if not text.startswith("/") or text.startswith("//") or text != os.path.normpath(text) or text == "/":
            return str(Path(text).resolve())
        return self._real(text)

    def _real(self, text: str) -> str:
        head, _, name = text.rpartition("/")
        real_head = "" if not head else self.folders.get(head)
        if real_head is None:
            real_head = self._real(head).rstrip("/")
            if len(self.folders) >= self.keep:
                self.folders.clear()
            self.folders[head] = real_head
        candidate = f"{real_head}/{name}"
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:  # missing: Path.resolve keeps the name as it is
            is_link = False
        return str(Path(text).resolve()) if is_link else candidate
