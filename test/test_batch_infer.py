"""Batch inference: DICOM decoding, bad inputs, streaming + resume after a kill, one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, dcm, read_jsonl, run, truncated_tiff
from medswift.infer.prediction_rows import REPORT_ROW_FIELDS
from medswift.core.images import ImageRejected, open_checked

SCRIPT = str(ROOT / "scripts" / "batch_infer.py")
FAST = ["--max_new_tokens", "8", "--image_max_token_num", "256", "--quiet"]
ENV = {"CUDA_VISIBLE_DEVICES": ""}


# --------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("name, size", [("CT_small.dcm", (128, 128)), ("MR_small.dcm", (64, 64)),
                                        ("MR_small_RLE.dcm", (64, 64)), ("JPEG2000.dcm", (256, 1024))])
def test_dicom_decodes_to_8bit_with_contrast(name, size):
    checked = open_checked(dcm(name))
    arr = np.asarray(checked.image)
    assert checked.image.mode == "L" and checked.image.size == size
    assert arr.dtype == np.uint8 and arr.std() > 20 and arr.min() < 30 and arr.max() > 200


def test_dicom_window_and_monochrome1(tmp_path):
    ds = pydicom.dcmread(dcm("MR_small.dcm"))
    assert "WindowCenter" in ds, "MR_small carries a VOI window: the decoder must use it"
    mono2 = np.asarray(open_checked(dcm("MR_small.dcm")).image).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    mono1 = np.asarray(open_checked(path).image).astype(int)
    assert np.array_equal(mono1, 255 - mono2), "MONOCHROME1 is shown inverted"


@pytest.mark.parametrize("name, reason", [("MR_truncated.dcm", "truncated DICOM"),
                                          ("rtplan.dcm", "DICOM without pixel data"),
                                          ("JPEG-lossy.dcm", "undecodable DICOM")])
def test_bad_dicom_gives_a_reason(name, reason):
    with pytest.raises(ImageRejected) as err:
        open_checked(dcm(name))
    assert err.value.reason == reason


def test_multi_frame_first_or_refuse():
    path = dcm("SC_rgb_rle_2frame.dcm")
    assert open_checked(path).image.mode == "RGB"
    with pytest.raises(ImageRejected, match="multi-frame DICOM: .*2 frames"):
        open_checked(path, multi_frame="refuse")


# --------------------------------------------------------------------------- real runs
def test_mixed_inputs_run_on_and_leak_no_patient_tag(tiny_model, tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("not a picture")
    inputs = [str(BUNDLED_IMAGES / "2_1.png"), *(str(dcm(name)) for name in ("CT_small.dcm", "MR_small.dcm",
                                                                          "MR_truncated.dcm")),
              str(tmp_path / "missing.png"), str(junk)]
    out = tmp_path / "pred.jsonl"
    proc = run([PYTHON, SCRIPT, "--test_images", *inputs, "--output_file", str(out), "--lang", "en", *FAST], env=ENV)
    rows = read_jsonl(out)
    assert [r["image"] for r in rows] == inputs[:3]
    for r in rows:
        assert set(r) == set(REPORT_ROW_FIELDS)
        assert r["model"] == str(tiny_model) and r["adapter"] is None and r["generation"]["temperature"] == 0.0
    assert ("inputs 6 = written 3 + already done 0 + skipped 3 (missing image 1, not an image 1, "
            "truncated DICOM 1)") in proc.stdout
    assert "not for diagnosis" in proc.stdout
    # no patient identifier from the DICOM headers reaches the output or the logs
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(dcm(name))
        for tag in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(ds.get(tag, "")).strip()
            if len(value) > 2:
                assert value not in out.read_text() and value not in proc.stdout + proc.stderr, tag


def test_resume_after_a_real_kill(tiny_model, converted, tmp_path):
    dataset = tmp_path / "all.jsonl"
    dataset.write_text("".join((converted / f"{s}.jsonl").read_text() for s in ("train", "val", "test")))
    out = tmp_path / "pred.jsonl"
    cmd = [PYTHON, SCRIPT, "--dataset", str(dataset), "--output_file", str(out), "--batch_size", "1", "--ablation",
           *FAST]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes()
    assert partial.endswith(b"\n"), "each batch lands whole"
    done_before = [json.loads(line)["key"] for line in partial.splitlines()]
    assert 2 <= len(done_before) < 10, "killed mid-run"
    # and a half line, as a crash of some other writer could leave, is repaired too
    with open(out, "ab") as fh:
        fh.write(b'{"key": "half')
    result = run(cmd + ["--resume"], env=ENV)
    rows = read_jsonl(out)
    keys = [r["key"] for r in rows]
    prompts = {json.loads(line)["messages"][0]["content"] for line in dataset.read_text().splitlines()}
    assert len(keys) == len(set(keys)) == 8 + 2 * len(prompts), "8 images + blank/noise per prompt, no duplicate"
    assert keys[: len(done_before)] == done_before
    assert f"already done {len(done_before)}" in result.stdout
    assert {r["control"] for r in rows} == {None, "blank", "noise"}
    assert all(r["reference"] for r in rows if r["control"] is None)


def test_folder_sample_is_seeded(tiny_model, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"p{k}.jsonl"
        run([PYTHON, SCRIPT, "--images_dir", str(BUNDLED_IMAGES), "--num_samples", "3", "--seed", "5",
             "--template", "4", "--output_file", str(out), *FAST], env=ENV)
        outs.append(read_jsonl(out))
    assert [r["image"] for r in outs[0]] == [r["image"] for r in outs[1]] and len(outs[0]) == 3
    assert {r["prompt"] for r in outs[0]} == {"请分析这张胸部X光影像，说明心脏、纵隔、肺野、胸膜和骨骼的情况。"}


@pytest.mark.parametrize("args, message", [
    (["--test_images", "x.png", "--backend", "vllm"], "vllm is not installed"),
    (["--test_images", "x.png", "--model_path", "/nonexistent/model"], "model not found"),
    (["--test_images", "x.png", "--adapter_path", "/nonexistent/ckpt"], "adapter not found"),
    (["--test_images", "x.png", "--prompt", "hi", "--template", "1"], "not both"),
    (["--test_images", "x.png", "--template", "12"], "template id must be 0..11"),
    (["--dataset", "/nonexistent.jsonl"], "dataset not found"),
    (["--images_dir", "/nonexistent"], "images folder not found"),
    (["--test_images", "x.png", "--images_dir", "."], "exactly one of"),
])
def test_user_mistakes_one_line(tiny_model, tmp_path, args, message):
    proc = run([PYTHON, SCRIPT, *args, "--output_file", str(tmp_path / "o.jsonl")], env=ENV, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_existing_output_needs_resume_or_overwrite(tiny_model, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"key": "x"}\n')
    proc = run([PYTHON, SCRIPT, "--test_images", str(BUNDLED_IMAGES / "2_1.png"), "--output_file", str(out)],
               env=ENV, check=False)
    assert proc.returncode == 2 and "use --resume" in proc.stderr


# --------------------------------------------------------------------------- one bad input costs only itself
def test_bad_files_inside_a_batch_skip_only_themselves(tiny_model, tmp_path):
    from PIL import Image

    good = [str(BUNDLED_IMAGES / "2_1.png"), str(BUNDLED_IMAGES / "2_2.png")]
    tiff = str(truncated_tiff(tmp_path / "cut.tif"))
    sliver = tmp_path / "sliver.png"  # 4 x 1000 px: Qwen's processor refuses aspect ratios above 200
    Image.new("L", (4, 1000), 128).save(sliver)
    inputs = [good[0], tiff, str(sliver), good[1]]
    out = tmp_path / "pred.jsonl"
    cmd = [PYTHON, SCRIPT, "--test_images", *inputs, "--output_file", str(out), "--batch_size", "16", *FAST]
    proc = run(cmd, env=ENV)
    assert [r["image"] for r in read_jsonl(out)] == good, "the good images of the batch are written"
    assert "inputs 4 = written 2 + already done 0 + skipped 2 (inference failed 1, truncated image 1)" in proc.stdout
    assert f"skipped {sliver}: inference failed (ValueError" in proc.stdout
    assert "Traceback" not in proc.stderr
    again = run(cmd + ["--resume"], env=ENV)  # and every resume does not fail the same way
    assert "written 0 + already done 2 + skipped 2" in again.stdout and len(read_jsonl(out)) == 2


def test_resume_keys_are_canonical_paths(tiny_model, tmp_path):
    work = tmp_path / "work"
    (work / "xr").mkdir(parents=True)
    for name in ("2_1.png", "2_2.png"):
        (work / "xr" / name).write_bytes((BUNDLED_IMAGES / name).read_bytes())
    out = tmp_path / "pred.jsonl"
    run([PYTHON, SCRIPT, "--test_images", "xr/2_1.png", "--output_file", str(out), *FAST], env=ENV, cwd=work)
    proc = run([PYTHON, SCRIPT, "--test_images", str(work / "xr" / "2_1.png"), str(work / "xr" / "2_2.png"),
                "--output_file", str(out), "--resume", *FAST], env=ENV)
    assert "written 1 + already done 1" in proc.stdout
    rows = read_jsonl(out)
    assert len(rows) == 2 and len({r["key"] for r in rows}) == 2
    assert rows[0]["key"] == str((work / "xr" / "2_1.png").resolve()) and rows[0]["image"] == "xr/2_1.png"


@pytest.mark.parametrize("where, message", [("under_a_file", "cannot create the folder"),
                                            ("/dev/full", "is not a regular file"),
                                            ("a_folder", "is not a regular file")])
def test_output_path_problems_are_one_line(tiny_model, tmp_path, where, message):
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "a_folder").mkdir()
    target = {"under_a_file": str(tmp_path / "plain.txt" / "pred.jsonl"), "/dev/full": "/dev/full",
              "a_folder": str(tmp_path / "a_folder")}[where]
    proc = run([PYTHON, SCRIPT, "--test_images", str(BUNDLED_IMAGES / "2_1.png"), "--output_file", target,
                "--overwrite", *FAST], env=ENV, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert Path("/dev/full").exists(), "--overwrite never removes what is not a regular file"


def test_a_full_disk_mid_run_is_one_line(tmp_path):
    from medswift.core.errors import UsageError
    from medswift.infer.prediction_file import append_lines

    with pytest.raises(UsageError, match="cannot write /dev/full: No space left on device"):
        append_lines(Path("/dev/full"), [{"key": "a"}])


def test_resume_keeps_every_whole_row_and_sets_aside_unreadable_lines(tiny_model, tmp_path):
    """Issue 16: a NUL-filled line after row 1 made --resume cut the rows after it and regenerate them,
    without a word; and a 100,000-deep JSON line was a RecursionError traceback."""
    out = tmp_path / "pred.jsonl"
    images = [str(BUNDLED_IMAGES / name) for name in ("2_1.png", "2_2.png", "1447_1.png")]
    cmd = [PYTHON, SCRIPT, "--test_images", *images, "--output_file", str(out), "--batch_size", "3", *FAST]
    run(cmd, env=ENV)
    lines = out.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""
    nul, deep = b"\0" * 64, b"[" * 100_000 + b"]" * 100_000
    out.write_bytes(b"\n".join([lines[0], nul, lines[1], deep, lines[2], b""]))
    result = run(cmd + ["--resume"], env=ENV)
    assert "inputs 3 = written 0 + already done 3" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
    assert out.read_bytes() == b"\n".join(lines), "every whole row kept, in place, byte for byte"
    aside = tmp_path / "pred.jsonl.unreadable"
    assert aside.read_bytes() == nul + b"\n" + deep + b"\n", "the unreadable lines are kept aside, as they were"
    (note,) = [line for line in result.stdout.splitlines() if "set aside" in line]
    assert "kept 3 whole rows; set aside 2 line(s)" in note and "line 2: not JSON" in note
    assert "line 4: nested too deeply" in note and str(aside) in note
    # other generation settings: one line before the model loads, unless asked (or nothing is left to do)
    assert "already done 3" in run([*cmd, "--resume", "--max_new_tokens", "16"], env=ENV).stdout
    out.write_bytes(b"\n".join(lines[:2]) + b"\n")
    other = run([*cmd, "--resume", "--max_new_tokens", "16"], env=ENV, check=False)
    errors = [line for line in other.stderr.splitlines() if line.startswith("error:")]
    assert other.returncode == 2 and len(errors) == 1 and "other generation settings" in errors[0], other.stderr
    assert "max_new_tokens 8" in errors[0] and "--mix_settings" in errors[0]
    mixed = run([*cmd, "--resume", "--max_new_tokens", "16", "--mix_settings"], env=ENV)
    assert "written 1 + already done 2" in mixed.stdout
