"""Data-parallel batch inference: 2 processes, 2 nodes on 127.0.0.1, a rank killed and resumed;
each must give the single-process run's keys and greedy texts, in input order, with no part
file left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import PYTHON, ROOT, free_port, read_jsonl, run


SCRIPT = str(ROOT / "scripts" / "batch_infer.py")
# One thread everywhere: torchrun gives each rank one, and the reference must do the same sums
# in the same order for its greedy texts to match to the last token.
ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
NOT_PARALLEL = {name: "" for name in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}


def env(**extra) -> dict:
    """The test's environment with the launch variables as given (the others removed)."""
    full = {k: v for k, v in os.environ.items() if k not in NOT_PARALLEL}
    return {**full, **ENV, **{k: str(v) for k, v in extra.items()}}


@pytest.fixture(scope="module")
def command(trained_adapter, all_bundled):
    """8 records, one per batch, so a rank killed after its first line is mid-run."""
    def build(out: Path, *extra: str) -> list[str]:
        return [PYTHON, SCRIPT, "--dataset", str(all_bundled), "--adapter_path", str(trained_adapter),
                "--output_file", str(out), "--batch_size", "1", "--max_new_tokens", "8",
                "--image_max_token_num", "256", "--quiet", *extra]
    return build


def texts(out: Path) -> list[tuple[str, str]]:
    return [(r["key"], r["response"]) for r in read_jsonl(out)]


def no_parts(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(out.name + ".part-*"))


@pytest.fixture(scope="module")
def reference(command, tmp_path_factory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("single") / "pred.jsonl"
    subprocess.run(command(out), cwd=ROOT, env=env(), check=True, capture_output=True, timeout=600)
    rows = texts(out)
    assert len(rows) == 8 and len({t for _, t in rows}) > 1, "the adapter's texts tell the images apart"
    return rows


def test_two_processes_match_one(command, reference, tmp_path):
    out = tmp_path / "pred.jsonl"
    proc = subprocess.run(command(out), cwd=ROOT, env=env(NPROC_PER_NODE=2), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.distributed.run --nproc_per_node 2 --nnodes 1" in proc.stderr
    assert texts(out) == reference and no_parts(out) == []
    assert proc.stdout.count("inputs 8 = written 8 + already done 0 + skipped 0") == 1, "one summary, all ranks"
    assert "on 2 ranks" in proc.stdout and "not for diagnosis" in proc.stdout and "Traceback" not in proc.stderr


def test_two_nodes_match_one(command, reference, tmp_path):
    out = tmp_path / "pred.jsonl"
    port = free_port()
    nodes = [subprocess.Popen(command(out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env(NPROC_PER_NODE=1, NNODES=2, NODE_RANK=rank, MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port))
             for rank in (0, 1)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    assert f"--node_rank 1 --master_addr 127.0.0.1 --master_port {port}" in results[1][1]
    assert texts(out) == reference and no_parts(out) == []
    assert "inputs 8 = written 8" in results[0][0] and "inputs" not in results[1][0], "rank 0 alone reports"


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    return None


def test_killed_rank_resumes_to_the_same_result(command, reference, tmp_path):
    out = tmp_path / "pred.jsonl"
    part = tmp_path / "pred.jsonl.part-1-of-2.jsonl"
    launcher = subprocess.Popen(command(out), cwd=ROOT, env=env(NPROC_PER_NODE=2), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    while time.time() < deadline and launcher.poll() is None:
        if part.exists() and part.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.02)
    pid = rank_pid(launcher, 1)
    assert pid, "rank 1 is running"
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert launcher.returncode == 2 and len(errors) == 1 and "re-run with --resume" in errors[0], err[-3000:]
    assert "Traceback" not in err
    kept = read_jsonl(part)
    assert 1 <= len(kept) < 4 and part.read_bytes().endswith(b"\n"), "killed mid-shard; whole lines only"
    done_before = sum(len(read_jsonl(p)) for p in tmp_path.glob("pred.jsonl.part-*"))

    proc = run(command(out, "--resume"), env=env(NPROC_PER_NODE=2))
    assert f"written {8 - done_before} + already done {done_before}" in proc.stdout
    assert texts(out) == reference and no_parts(out) == [], "input order, no duplicate, no gap, parts merged"


def test_parallel_mistakes_are_one_line(command, tmp_path):
    out = tmp_path / "pred.jsonl"
    out.write_text('{"key": "x"}\n')
    for extra, message in (({"NPROC_PER_NODE": "two"}, "NPROC_PER_NODE must be a positive integer"),
                           ({"NNODES": "2", "NODE_RANK": "0"}, "set MASTER_ADDR"),
                           ({"NPROC_PER_NODE": "2"}, "use --resume")):
        proc = subprocess.run(command(out), cwd=ROOT, env=env(**extra), capture_output=True, text=True, timeout=120)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
        assert "torch.distributed.run" not in proc.stderr, "checked before any rank starts"
    # a part file's path that is a folder: one line before any rank starts (it failed after the model
    # loaded, the last line torchrun's)
    (tmp_path / "pred.jsonl.part-1-of-2.jsonl").mkdir()
    proc = subprocess.run(command(out), cwd=ROOT, env=env(NPROC_PER_NODE=2), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "torch.distributed.run" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "part-1-of-2.jsonl is not a regular " \
        "file" in proc.stderr
    (tmp_path / "pred.jsonl.part-1-of-2.jsonl").rmdir()
    (tmp_path / "pred.jsonl.part-0-of-2.jsonl").write_text('{"key": "y"}\n')
    out.write_text("")
    proc = subprocess.run(command(out), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "part files of an unfinished parallel run" in proc.stderr


def test_merge_orders_dedupes_and_keeps_parts_when_a_rank_is_missing(tmp_path):
    from medswift.core.errors import UsageError
    from medswift.infer.prediction_file import merge_parts, part_files, part_path, prepare_output

    out = tmp_path / "pred.jsonl"
    out.write_text('{"key": "b", "n": 0}\n')
    part_path(out, 0, 2).write_text('{"key": "d"}\n{"key": "b", "n": 1}\n{"key": "z"}\n')
    part_path(out, 1, 2).write_text('{"key": "c"}\n{"key": "a"}\n{"key": "half')  # killed mid-write
    part_path(out, 0, 3).write_text('{"key": "e"}\n')  # a killed run with another world size
    assert prepare_output(out, resume=True, overwrite=False, parts=True) == set("abcdez")
    order = {k: n for n, k in enumerate("abcde")}
    with pytest.raises(UsageError, match="every node must write to the same shared folder"):
        merge_parts(out, order, expected={"a", "q"})
    assert len(part_files(out)) == 3 and read_jsonl(out) == [{"key": "b", "n": 0}], "nothing touched"
    assert merge_parts(out, order, expected={"a", "c"}) == 5 and part_files(out) == []
    assert [r["key"] for r in read_jsonl(out)] == ["b", "a", "c", "d", "e", "z"], "input order, unknown keys last"
