"""What several test files share: paths, running a command, generated inputs, servers and launchers.

One module, imported by the test files and by conftest.py (which keeps the fixtures); no test
file imports another.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

ROOT = Path(__file__).resolve().parents[1]  # app/ and this folder are importable through pyproject's pytest pythonpath


VENV_BIN = ROOT / ".venv" / "bin"


PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable


BUNDLED_IMAGES = ROOT / "data" / "openi" / "images"


REPORTS = {"zh": ROOT / "data" / "openi" / "openi-zh.json", "en": ROOT / "data" / "openi" / "openi-en.json"}


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file the project wrote (every line must be JSON)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(cmd, env=None, timeout=900, check=True, cwd=ROOT):
    """Run a command, return CompletedProcess; on failure show its output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


CXR14_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def make_cxr14(root: Path, n_patients: int = 12, size: int = 96) -> dict:
    """A ChestX-ray14-shaped set: Data_Entry_2017.csv with NIH's columns, images named like
    NIH's (``<patient>_<follow-up>.png``) cut from the bundled X-rays, and bad rows."""
    images = root / "images"
    images.mkdir(parents=True)
    sources = sorted(BUNDLED_IMAGES.glob("*.png"))
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
    rows = []
    k = 0
    for patient in range(1, n_patients + 1):
        for follow in range(1 + patient % 3):  # 1-3 images per patient
            name = f"{patient:08d}_{follow:03d}.png"
            Image.open(sources[k % len(sources)]).convert("L").resize((size, size)).save(images / name)
            labels = "No Finding" if k % 3 == 0 else "|".join(CXR14_LABELS[j] for j in {k % 14, (k * 5) % 14})
            rows.append([name, labels, str(follow), str(patient), "58", "M", "PA", "2500", "2048", "0.14", "0.14"])
            k += 1
    bad = [["99999999_000.png", "Effusion", "0", "99999", "40", "F", "PA", "1", "1", "1", "1"],   # missing image
           [rows[0][0].replace("_000", "_900"), "Alien_Disease", "0", "1", "58", "M", "PA", "1", "1", "1", "1"],
           [rows[1][0].replace("_0", "_8"), "", "0", "2", "58", "M", "PA", "1", "1", "1", "1"]]
    for name in (bad[1][0], bad[2][0]):
        Image.open(sources[0]).convert("L").resize((size, size)).save(images / name)
    csv_path = root / "Data_Entry_2017.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows + bad)
    return {"csv": csv_path, "images": images, "rows": rows, "bad": bad}


def one_error_line(stderr: str) -> str:
    """The one ``error:`` line a tool printed for a user's mistake (and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def refused(proc) -> str:
    """A command that stopped with exit code 2 and printed one ``error:`` line, nothing else."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


# --------------------------------------------------------------------------- images
def truncated_tiff(path: Path | None = None) -> bytes | Path:
    """An uncompressed TIFF cut in half (seeded pixels): Pillow raises ValueError ("buffer is not
    large enough") from load(), not the OSError it documents for truncation. Written to ``path``
    when given (and the path returned), else the bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, format="TIFF")
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    if path is None:
        return data
    path.write_bytes(data)
    return path


def dcm(name: str) -> Path:
    path = get_testdata_file(name)
    assert path, f"pydicom test file {name} missing"
    return Path(path)


def explicit_le_header(group: int, element: int, vr: bytes, length: int) -> bytes:
    """An Explicit VR Little Endian element header for a 4-byte-length VR (OB, UN...)."""
    return struct.pack("<HH2sHI", group, element, vr, 0, length)


def write_deflated_dicom(path: Path, ds: Dataset, pixel_bytes: int, padding_bytes: int = 0) -> None:
    """A Deflated Explicit VR Little Endian file whose PixelData is ``pixel_bytes`` zeros, then
    optional trailing padding, streamed so the zeros are never held in memory.

    After a full flush deflate starts afresh, so a block of zeros compresses to the same
    bytes every time: it is compressed once and repeated (16000 x 16000 in a fraction of a second).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name)])  # reproducible bytes
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_dataset(head, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(head.getvalue() + explicit_le_header(0x7FE0, 0x0010, b"OB", pixel_bytes)),
             deflater.flush(zlib.Z_FULL_FLUSH)]
    block = 1 << 22
    zeros = bytes(block)
    zero_block = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)

    def add_zeros(count: int) -> None:
        whole, rest = divmod(count, block)
        parts.extend([zero_block] * whole)
        parts.extend([deflater.compress(zeros[:rest]), deflater.flush(zlib.Z_FULL_FLUSH)])

    add_zeros(pixel_bytes)
    if padding_bytes:  # (FFFC,FFFC) Data Set Trailing Padding
        parts.append(deflater.compress(explicit_le_header(0xFFFC, 0xFFFC, b"OB", padding_bytes)))
        add_zeros(padding_bytes)
    parts.append(deflater.flush())
    meta_bytes = DicomBytesIO()
    meta_bytes.is_little_endian, meta_bytes.is_implicit_VR = True, False
    write_file_meta_info(meta_bytes, meta)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta_bytes.getvalue() + b"".join(parts))


def image_dataset(rows: int, columns: int, modality: str | None = "DX") -> Dataset:
    ds = Dataset()
    if modality:
        ds.Modality = modality
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    return ds


def png_declaring(size: tuple[int, int], source: Path) -> bytes:
    """A real PNG whose IHDR is rewritten to declare ``size`` (CRC fixed): the pixel data
    stays that of ``source``, so decoding it would fail as truncated, not as too large."""
    data = bytearray(source.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", *size)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def with_rows_length_3(raw: bytes) -> bytes:
    """Rows (US, 2 bytes) given a 3-byte value: pydicom raises BytesLengthException on access."""
    at = raw.index(b"\x28\x00\x10\x00US\x02\x00")
    return raw[:at] + b"\x28\x00\x10\x00US\x03\x00" + raw[at + 8:at + 10] + b"\x00" + raw[at + 10:]


def with_meta_group_length_2(raw: bytes) -> bytes:
    """(0002,0000) UL with a 2-byte value: BytesLengthException while reading the file meta."""
    assert raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    return raw[:138] + b"\x02\x00" + raw[140:142] + raw[144:]


# --------------------------------------------------------------------------- report cards
def openi(lang: str) -> list[str]:
    return [a["caption"] for a in json.loads(REPORTS[lang].read_text(encoding="utf-8"))["annotations"]]


def shuffled_rows(lang: str, n: int, seed: int = 0, **extra) -> list[dict]:
    """Real references; predictions made of 1-3 real report sentences drawn with a seed."""
    reports = openi(lang)
    split = r"(?<=。)" if lang == "zh" else r"(?<=[.!?])\s+"
    sentences = [s for r in reports[:400] for s in re.split(split, r) if s.strip()]
    rng = random.Random(seed)
    return [{"key": f"{lang}{i}", "response": ("" if lang == "zh" else " ").join(rng.sample(sentences, rng.randint(1, 3))),
             "reference": reports[(i * 7) % len(reports)], **extra} for i in range(n)]


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the manual's commands
# The manual: the README (its first screen holds the two commands) and the pages in docs/, in the
# order their commands run, a later one using what an earlier one wrote (the data are converted,
# then trained on, then inferred on). A new page goes into this list (test_docs.py checks it).
MANUAL_PAGES = ("README.md", "docs/getting-started.md", "docs/datasets.md", "docs/training.md", "docs/inference.md",
                "docs/metrics.md", "docs/post-training.md", "docs/reward.md", "docs/post-training-recipe.md",
                "docs/rl-demo.md", "docs/priors.md", "docs/sibling-jobs.md", "docs/grounding.md", "docs/serving.md",
                "docs/reliability.md", "docs/benchmarks.md", "docs/developing.md")


README = (ROOT / "README.md").read_text(encoding="utf-8")


MANUAL = "\n".join((ROOT / page).read_text(encoding="utf-8") for page in MANUAL_PAGES)


def bash_blocks() -> list[list[str]]:
    """The commands of every ```bash block of the manual, block by block, in MANUAL_PAGES order."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", MANUAL, flags=re.S):
        commands = []
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # trailing comment
            if line and not line.startswith("#"):
                commands.append(line)
        blocks.append(commands)
    return blocks


BLOCKS = bash_blocks()


QUICKSTART, TEST_COMMAND = "bash tools/quickstart.sh", "bash tools/run_tests.sh"


OTHERS = [c for block in BLOCKS[1:] for c in block]


# Three groups, each in its own scratch checkout and test file so that pytest-xdist can run them
# side by side: the quick start with the commands that use its results (test_readme.py), the
# benchmarks (test_readme_bench.py) and every other command, in the manual's order
# (test_readme_commands.py).
AFTER_QUICKSTART = [c for c in OTHERS if "results/quickstart" in c]


BENCHMARKS = [c for c in OTHERS if " bench/" in c and c not in AFTER_QUICKSTART]


COMMANDS = [c for c in OTHERS if c not in AFTER_QUICKSTART and c not in BENCHMARKS]


def run_readme_commands(commands: list[str], checkout: Path) -> dict[str, str | None]:
    """Run ``commands`` in the manual's order in ``checkout`` (a later one may use what an earlier one
    wrote); each command's failure (None: it passed), so that every test can check its own."""
    failures = {}
    for command in commands:
        try:
            run_readme_command(command, checkout)
            failures[command] = None
        except AssertionError as exc:
            failures[command] = str(exc)
    return failures


def run_readme_command(command: str, checkout: Path) -> None:
    words = shlex.split(command)
    scripts = [w for w in words if w.endswith((".sh", ".py"))]
    assert scripts and all((ROOT / s).is_file() for s in scripts), f"names a missing script: {command}"
    if command == TEST_COMMAND or "..." in command:
        return  # CI runs the test command; placeholders are only checked for their script
    proc = run(["bash", "-c", command], env={"CUDA_VISIBLE_DEVICES": ""}, check=False, timeout=900, cwd=checkout)
    if re.search(r"[= ]/(models|data)/", command) and not command.startswith("DRY_RUN=1"):
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert "not found" in errors[0]
    else:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


# --------------------------------------------------------------------------- servers and launchers
SERVER_ENV = {"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64"}

# Waits on a condition (a server answering, a page element appearing) end as soon as it holds; their
# ceilings only stop a wait that would never end, so they are generous: CI shares two cores with other
# jobs, and a load-dependent budget is a flaky test. MEDSWIFT_TEST_WAIT_SCALE (default 1) multiplies them.
WAIT_SCALE = float(os.environ.get("MEDSWIFT_TEST_WAIT_SCALE") or 1)
WAIT_CEILING_S = 600  # for any one condition of a browser or server test


def ceiling(seconds: float = WAIT_CEILING_S) -> float:
    """A wait's ceiling in seconds, scaled by MEDSWIFT_TEST_WAIT_SCALE."""
    return seconds * WAIT_SCALE


def ceiling_ms(seconds: float = WAIT_CEILING_S) -> float:
    """The same in milliseconds, as Playwright takes its timeouts."""
    return ceiling(seconds) * 1000


NO_PROXY = {"http": None, "https": None}


@contextmanager
def running_server(cmd: list[str], env: dict, log_path: Path, url: str, start_timeout: float):
    """Start the deploy launcher ``cmd`` in its own process group (so that teardown ends the server
    and anything it started), wait until ``url``/v1/models answers, yield the process; stop it after."""
    import requests

    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/v1/models", timeout=2, proxies=NO_PROXY).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > ceiling(max(start_timeout, WAIT_CEILING_S)):
                pytest.fail(f"server not up after {time.monotonic() - t0:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        print(f"\n[serving] server up on {url} after {time.monotonic() - t0:.1f} s")
        yield proc
    finally:
        stop_group(proc)
        log.close()


def free_port() -> int:
    """A port free now, for a process that cannot bind port 0 itself and report it (the deploy
    launcher refuses PORT=0; torchrun's MASTER_PORT is shared by several processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_data_url(path: Path) -> str:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def stop_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's process group, wait until every member is gone, SIGKILL after `grace`."""
    def alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if alive():
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        proc.poll()  # reap the launcher so its group can empty
        time.sleep(0.2)
    if alive():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not alive(), "server processes survived teardown"


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


LAUNCHERS = sorted((ROOT / "tools").rglob("*.sh"))


CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}  # the tests must not depend on the machine having a GPU


def launcher(name: str, env: dict, *args: str, check: bool = True):
    (script,) = [p for p in LAUNCHERS if p.name == name]
    return run(["bash", str(script), *args], env={**CPU_ONLY, **env}, check=check, timeout=120)


def dry(name: str, env: dict, *args: str) -> tuple[dict, list[str]]:
    """The printed command split into (environment assignments, argv)."""
    proc = launcher(name, {"DRY_RUN": "1", **env}, *args)
    words = shlex.split(proc.stdout.strip())
    assigns = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        assigns[key] = value
    return assigns, words


MIMIC_SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
MIMIC_METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                          "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                          "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]


def mimic_dicom_id(label: str) -> str:
    """An id shaped like MIMIC-CXR's dicom_id (five dash-joined groups of 8 hex digits)."""
    import hashlib

    digest = hashlib.sha1(label.encode()).hexdigest()
    return "-".join(digest[k:k + 8] for k in range(0, 40, 8))


def write_mimic_cxr(base: Path, studies: list[dict]) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG miniature in PhysioNet's layout, with dates: ``(jpg root, reports root)``.
    Each study: subject, study, split, views (ViewPositions; view k's dicom_id is
    ``mimic_dicom_id(f"{study}/{k}")``), date (StudyDate ``YYYYMMDD``), time (StudyTime, MIMIC's
    ``HHMMSS.fff`` without its leading zero) and report (text). Metadata rows are written newest
    first, as no reader may rely on the file's order."""
    import gzip

    jpg, reports = base / "mimic-cxr-jpg" / "2.0.0", base / "mimic-cxr-reports"
    split_rows, meta_rows = [], []
    for k, st in enumerate(studies):
        subject, study = st["subject"], st["study"]
        for v, position in enumerate(st["views"]):
            dicom = mimic_dicom_id(f"{study}/{v}")
            path = jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.linear_gradient("L").resize((24, 24)).rotate(13 * k + 5 * v).save(path, format="JPEG")
            split_rows.append([dicom, study, subject, st["split"]])
            meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", position, "3056", "2544", st["date"],
                              st["time"], "CHEST (PA AND LAT)", "lateral" if "L" in position else "frontal", "Erect"])
        txt = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(st["report"])
    for name, header, rows in (("split", MIMIC_SPLIT_COLUMNS, split_rows),
                               ("metadata", MIMIC_METADATA_COLUMNS, meta_rows[::-1])):
        with gzip.open(jpg / f"mimic-cxr-2.0.0-{name}.csv.gz", "wt", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    return jpg, reports


# --------------------------------------------------------------------------- ms-swift's own arguments
def swift_fields(verb: str) -> set[str]:
    """The argument names ms-swift's own dataclass for ``swift <verb>`` accepts."""
    import dataclasses

    from swift import arguments

    cls = {"sft": arguments.SftArguments, "rlhf": arguments.RLHFArguments, "infer": arguments.InferArguments,
           "export": arguments.ExportArguments, "deploy": arguments.DeployArguments,
           "rollout": arguments.RolloutArguments}[verb]
    return {f.name for f in dataclasses.fields(cls)}


def swift_commands(stdout: str) -> list[list[str]]:
    """Every `swift <verb> ...` line a dry run printed, as argv from the verb on."""
    out = []
    for line in stdout.strip().splitlines():
        words = shlex.split(line)
        at = [i for i, w in enumerate(words) if w.endswith("/swift") or w == "swift"]
        if at:
            out.append(words[at[0] + 1:])
    return out


def unknown_flags(stdout: str) -> list[str]:
    bad = []
    for argv in swift_commands(stdout):
        fields = swift_fields(argv[0])
        bad += [f"swift {argv[0]} {w}" for w in argv[1:] if w.startswith("--") and w[2:] not in fields]
    return bad


@contextmanager
def demo_chat(model: str | None, adapter: str | None):
    """The demo's ReportChat on ``model``/``adapter`` (an engine of batch 1, image budget 64, 1 MB
    uploads); load_engine sets IMAGE_MAX_TOKEN_NUM process-wide, so it is put back afterwards."""
    from app import gradio_app as app
    from medswift.core import models as eng

    choice = eng.resolve(model, adapter, image_tokens=64)
    before = os.environ.get("IMAGE_MAX_TOKEN_NUM")
    try:
        yield app.ReportChat(eng.load_engine(choice, max_batch_size=1), choice, app.Settings(max_upload_mb=1))
    finally:
        if before is None:
            os.environ.pop("IMAGE_MAX_TOKEN_NUM", None)
        else:
            os.environ["IMAGE_MAX_TOKEN_NUM"] = before
