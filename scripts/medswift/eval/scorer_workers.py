"""Worker processes for the report card's pure-Python scorers (ROUGE-L, BLEU n-gram counting,
CIDEr, the findings labeller), so a large prediction file uses every core it is given.

``Workers(1)`` runs everything in the calling process (no pool start-up for small files);
both kinds hand back ``concurrent.futures.Future`` objects, so callers do not care which.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

# Below this many records a pool costs more than it saves.
PARALLEL_MIN_ROWS = 2000


def default_workers() -> int:
    try:
        return max(1, min(2, len(os.sched_getaffinity(0))))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, min(2, os.cpu_count() or 1))


class Workers:
    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._pool = None
        if self.workers > 1:
            # fork: the workers inherit the imported scorers and need nothing pickled but data
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method))

    def submit(self, fn, *args) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # re-raised by .result(), as a pool would
            done.set_exception(exc)
        return done

    def chunks(self, items: list) -> list[list]:
        """``items`` cut into about 4 pieces per worker (1 piece when serial), order kept."""
        pieces = 1 if self._pool is None else 4 * self.workers
        size = max(1, -(-len(items) // pieces))
        return [items[i:i + size] for i in range(0, len(items), size)] or [[]]

    def map_chunks(self, fn, items: list, *args) -> list[Future]:
        return [self.submit(fn, chunk, *args) for chunk in self.chunks(items)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gather(futures: list[Future]) -> list:
    """The chunk results, concatenated in submission order."""
    out: list = []
    for f in futures:
        out.extend(f.result())
    return out
