"""Data-parallel inference over processes, GPUs and nodes, the way ms-swift runs ``swift infer``.

The environment variables of training (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT) make the command relaunch itself under torchrun (``python -m
torch.distributed.run``), as ``swift`` does. torchrun starts and watches the processes;
torch.distributed (gloo) carries the few messages between them: rank 0's view of what is already
done, and each rank's summary at the end. Every rank takes every world-th input of the same
ordered to-do list and writes its own part file (medswift.infer.prediction_file); rank 0 merges them.
With vLLM and ``tensor_parallel_size`` N, each N consecutive ranks hold one copy of the model
and share a shard, as in ms-swift's infer pipeline.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from medswift.core.errors import UsageError, describe, one_line

LAUNCH_VARS = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
# A file the launching process names for rank 0, which writes its exit code there once the run is
# complete (merged, summary printed): a rank that dies after that must not fail the run.
DONE_FILE_VAR = "MEDSWIFT_RUN_DONE_FILE"


class Stopped(Exception):
    """Rank 0 stopped the run and printed why; the other ranks leave without a word."""


@dataclass
class Launch:
    nproc: int
    nnodes: int
    flags: list[str]

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes


def _positive(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{name} must be a positive integer, got '{value}'")
    return int(value)


def launch_plan(environ=os.environ) -> Launch | None:
    """The torchrun flags these variables ask for, or None: run here as one process (neither
    NPROC_PER_NODE nor NNODES set, both 1, or this process is already a rank)."""
    if "LOCAL_RANK" in environ or (environ.get("NPROC_PER_NODE") is None and environ.get("NNODES") is None):
        return None
    nproc = _positive("NPROC_PER_NODE", environ.get("NPROC_PER_NODE") or "1")
    nnodes = _positive("NNODES", environ.get("NNODES") or "1")
    if nproc == nnodes == 1:
        return None
    flags = ["--nproc_per_node", str(nproc), "--nnodes", str(nnodes)]
    if nnodes > 1:
        node_rank, addr = environ.get("NODE_RANK", ""), environ.get("MASTER_ADDR", "")
        if not node_rank.isdigit() or int(node_rank) >= nnodes:
            raise UsageError(f"NNODES={nnodes}: set NODE_RANK to 0..{nnodes - 1} on each node, got '{node_rank}'")
        if not addr:
            raise UsageError(f"NNODES={nnodes}: set MASTER_ADDR to the address of node 0")
        flags += ["--node_rank", node_rank, "--master_addr", addr,
                  "--master_port", environ.get("MASTER_PORT") or "29500"]
    else:  # one node: without MASTER_PORT torchrun picks a free port itself
        flags += [arg for name in ("MASTER_ADDR", "MASTER_PORT") if environ.get(name)
                  for arg in (f"--{name.lower()}", environ[name])]
    return Launch(nproc, nnodes, flags)


def relaunch(plan: Launch, module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` under torchrun and return its exit code. torchrun runs in this
    process (its own ``run``), so a failed rank is one line here, not torchrun's traceback."""
    import tempfile

    from torch.distributed.run import parse_args, run

    launch = [*plan.flags, "--module", module, *argv]
    print(f"[medswift] running: {shlex.join([sys.executable, '-m', 'torch.distributed.run', *launch])}",
          file=sys.stderr, flush=True)
    package_root = str(Path(__file__).resolve().parents[2])  # the ranks import the medswift this process runs
    saved = {name: os.environ.get(name) for name in (DONE_FILE_VAR, "PYTHONPATH")}
    with tempfile.TemporaryDirectory(prefix="medswift-run-") as tmp:
        done_file = os.path.join(tmp, "rank0-exit-code")
        os.environ[DONE_FILE_VAR] = done_file  # the ranks inherit it
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, saved["PYTHONPATH"]]))
        try:
            return _run_ranks(run, parse_args(launch), done_file)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _run_ranks(run, config, done_file: str) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    try:
        run(config)
    except ChildFailedError as exc:
        completed = _rank0_exit_code(done_file)
        if completed is not None:  # merged and summarised: a rank that died after that changes nothing
            return completed
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            raise UsageError(f"rank {rank} was stopped by {failure.signal_name()}; finished batches are kept: "
                             "re-run with --resume to finish") from None
        # the rank printed its own error line; torchrun's report followed it: the last line is ours
        raise UsageError(f"rank {rank} stopped (exit code {failure.exitcode}; its reason is above); finished "
                         "batches are kept: re-run with --resume to finish") from None
    except (RendezvousError, SignalException, OSError, RuntimeError) as exc:
        # RuntimeError covers torch's DistNetworkError/DistStoreError (a busy MASTER_PORT, node 0 unreachable)
        raise UsageError(f"torchrun stopped ({describe(exc)}); finished batches are kept: "
                         "re-run with --resume to finish") from None
    return 0


def _rank0_exit_code(done_file: str) -> int | None:
    try:
        with open(done_file, encoding="utf-8") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def finish_rank(code: int, completed: bool) -> int:
    """The end of a torchrun rank: rank 0 records its exit code for the launcher when the run is
    ``completed`` (merged, summary printed),
    then every rank leaves at once with ``os._exit``. A normal interpreter exit runs the C++ destructors
    of torch's process-group threads, which aborted a rank now and then ("terminate called without an
    active exception", SIGABRT) after its work was done. Outside torchrun: ``code``, unchanged."""
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1 or "RANK" not in os.environ:
        return code
    done_file = os.environ.get(DONE_FILE_VAR)
    if os.environ["RANK"] == "0" and done_file and completed:
        try:
            with open(done_file, "w", encoding="utf-8") as fh:
                fh.write(str(code))
        except OSError:
            pass  # the launcher then reports the ranks' exit codes as before
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class World:
    """This process's place in the run; one process alone is rank 0 of 1."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    tensor_parallel: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> int:
        return self.rank // self.tensor_parallel

    @property
    def shards(self) -> int:
        return max(1, self.size // self.tensor_parallel)

    @property
    def writes(self) -> bool:
        """The first rank of each model copy writes; the others hold the rest of its weights."""
        return self.rank % self.tensor_parallel == 0

    def device_map(self) -> str | None:
        """On CUDA each rank takes its LOCAL_RANK's GPU (ms-swift would spread a rank over
        several GPUs when there are more GPUs than ranks)."""
        import torch

        return f"cuda:{self.local_rank}" if self.distributed and torch.cuda.is_available() else None

    def first(self, fn):
        """``fn()`` on rank 0, its result on every rank; its UsageError stops every rank."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        payload = [None]
        if self.main:
            try:
                payload = [("ok", fn())]
            except UsageError as exc:
                payload = [("error", str(exc))]
        self._collective(dist.broadcast_object_list, payload, src=0)
        kind, value = payload[0]
        if kind == "error":
            if self.main:
                raise UsageError(value)
            raise Stopped()
        return value

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere). It returns once every rank has sent
        its own, so it is also the barrier before the merge."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size if self.main else None
        self._collective(dist.gather_object, obj, out, dst=0)
        return out

    @staticmethod
    def _collective(fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except RuntimeError as exc:  # gloo: a peer died (torchrun then stops this rank too)
            why = (f"another rank stopped ({one_line(exc, 160)}); finished batches are kept: "
                   "re-run with --resume to finish")
            if os.environ.get(DONE_FILE_VAR):
                # under this toolkit's launcher, which names the rank that died in the run's one error
                # line: a note here, so that the last line stays the launcher's and stands alone
                print(f"[medswift] {why}", file=sys.stderr, flush=True)
                raise Stopped() from None
            raise UsageError(why) from None

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def join(tensor_parallel: int = 1) -> World:
    """This process's World; under torchrun it joins the process group first."""
    size = int(os.environ.get("WORLD_SIZE") or 1)
    if size <= 1 or "RANK" not in os.environ:
        return World(tensor_parallel=tensor_parallel)
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK") or 0), tensor_parallel)
    if size % tensor_parallel:
        raise UsageError(f"{size} processes do not split into model copies of --tensor_parallel_size "
                         f"{tensor_parallel}")
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    # gloo on CPU and GPU alike: only small objects travel, and it notices a dead peer. A shard can
    # take hours, so the final gather waits days, not gloo's default 30 minutes.
    dist.init_process_group("gloo", timeout=timedelta(days=7))
    return world
