"""Shared fixtures: repo paths, the tiny model (built once per session), a converted split."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from build_tiny_model import is_complete
from helpers import BUNDLED_IMAGES, PYTHON, REPORTS, ROOT, make_cxr14, run

TINY_MODEL = ROOT / "weights" / "tiny-qwen3-vl"  # the one folder of the user's that the suite may write


def user_folders() -> set[str]:
    return {str(p.relative_to(ROOT)) for name in ("results", "data", "weights") for p in (ROOT / name).rglob("*")}


def tiny_model_build(path: str) -> bool:
    """``path`` is the tiny_model fixture's build: weights/tiny-qwen3-vl or a file directly in it,
    once it holds a complete build (build_tiny_model.is_complete), or the builder's scratch folder
    next to it (.tiny-qwen3-vl.tmp-*, gone when the build ends) while another worker builds."""
    home = TINY_MODEL.relative_to(ROOT)
    parts = Path(path).relative_to(home.parent).parts if Path(path).is_relative_to(home.parent) else ()
    if parts and parts[0].startswith(f".{home.name}."):
        return True
    return (Path(path) == home or Path(path).parent == home) and is_complete(TINY_MODEL)


@pytest.fixture(scope="session", autouse=True)
def users_folders_untouched():
    """The suite writes nothing into the user's results/, data/ or weights/ (a test run once left tiny
    checkpoints in results/lora, which the launchers then took for the newest), except the tiny
    model that the tiny_model fixture builds into weights/ on purpose."""
    before = user_folders()
    yield
    changed = (user_folders() - before) | (before - user_folders())
    changed = {path for path in changed if not tiny_model_build(path)}
    assert not changed, f"the tests changed the user's folders: {sorted(changed)[:10]}"


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory):
    """Converters remember their last output for the launchers' hints: in a scratch folder here,
    never in the user's results/; the environment is put back afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSWIFT_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The embedded default model, built on demand (seconds) into weights/; one build at a time
    when the suite runs in several worker processes (pytest-xdist)."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "medswift-tiny-model-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py")], timeout=600)
    assert (TINY_MODEL / "config.json").is_file()
    return TINY_MODEL


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """The bundled X-rays converted to ms-swift JSONL (English reports)."""
    out = tmp_path_factory.mktemp("openi_swift")
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(REPORTS["en"]),
         "--images_dir", str(BUNDLED_IMAGES), "--output_dir", str(out), "--lang", "en", "--quiet"])
    return out


@pytest.fixture(scope="session")
def all_bundled(converted, tmp_path_factory) -> Path:
    """All eight bundled X-rays as one training file (the learning check wants every image)."""
    path = tmp_path_factory.mktemp("all") / "all.jsonl"
    path.write_text("".join((converted / f"{s}.jsonl").read_text() for s in ("train", "val", "test")))
    assert len(path.read_text().splitlines()) == 8
    return path


@pytest.fixture(scope="session")
def trained_adapter(tiny_model, all_bundled, tmp_path_factory) -> Path:
    """40 LoRA steps on the bundled X-rays with the one-GPU launcher (about 40 s on 2 quiet cores).

    Rank 64 / alpha 128 at 3e-3, constant: a 10 M-parameter random model needs more adapter
    capacity than 8B does to fit eight reports; the launcher defaults stay the reference's.
    """
    def train(out: Path) -> None:
        run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps", "40"],
            env={"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64", "MODEL": str(tiny_model),
                 "TRAIN_FILE": str(all_bundled), "VAL_FILE": "none", "OUTPUT_DIR": str(out),
                 "LORA_RANK": "64", "LORA_ALPHA": "128", "LEARNING_RATE": "3e-3", "LR_SCHEDULER": "constant",
                 "GLOBAL_BATCH": "4", "MICRO_BATCH": "4", "LOGGING_STEPS": "1", "SAVE_STEPS": "40"}, timeout=900)

    (ckpt,) = sorted(once_per_run(tmp_path_factory, "learn", train).glob("v*/checkpoint-*"))
    return ckpt


def once_per_run(tmp_path_factory, name: str, build) -> Path:
    """A folder built once per test run even when pytest-xdist runs several workers: they share
    the run's temporary root; the first to take the lock builds, the others wait and reuse it."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    target = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.done").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            build(target)
            (shared / f"{name}.done").touch()
    return target


# --------------------------------------------------------------------------- classification fixtures
@pytest.fixture(scope="session")
def cxr14_converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cxr14")
    data = make_cxr14(root)
    out = root / "swift"
    run([PYTHON, str(ROOT / "scripts" / "convert_chestxray14.py"), "--csv", str(data["csv"]),
         "--images_dir", str(data["images"]), "--output_dir", str(out), "--quiet"])
    return out


@pytest.fixture(scope="module")
def checkout(tiny_model, tmp_path_factory) -> Path:
    """For the README tests, one per test file: a scratch copy of the tracked files, where the
    README's commands write; .venv and the built tiny model are links, not copies."""
    dest = tmp_path_factory.mktemp("readme") / "MedSwift-VL"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / "weights" / tiny_model.name).symlink_to(tiny_model)
    return dest


# The files that take longest first, so that the workers (pytest-xdist, a file per worker at a
# time) finish together instead of one running a long file alone at the end. The order is their
# measured test time (junit durations of a full run, 2026-12-07: test_rl 30% of the whole).
SLOW_FIRST = ("test_rl.py", "test_readme_commands.py", "test_batch_infer.py", "test_readme.py",
              "test_field_metrics.py", "test_tiny_model.py", "test_training.py", "test_rl_demo.py",
              "test_readme_bench.py", "test_evaluate.py", "test_demo.py", "test_batch_infer_parallel.py",
              "test_grounding.py", "test_serving.py", "test_launchers.py", "test_rewards.py",
              "test_classification.py", "test_findings.py", "test_studies.py", "test_priors_infer.py",
              "test_thinking.py", "test_serving_hostile.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: in-file order is kept
