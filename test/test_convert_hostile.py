"""Hostile inputs for the four converters (one shared core, medswift.data): a decoder
that throws or a worker that dies costs one record, wrong field types and encodings are listed
or one error line, images stay inside --images_dir, output problems are one error line, and a
re-run leaves no stale copies. Every fixture is generated here, seeded."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_cxr14, one_error_line, truncated_tiff
from medswift.core.errors import UsageError
from medswift.data.converters import captions as convert_captions
from medswift.data.converters import chestxray14 as convert_chestxray14
from medswift.data.pipeline import checks as image_checks
from medswift.data.converters import ham10000 as convert_ham10000
from medswift.data.pipeline import output_files as outputs
from medswift.data.converters import reports as conv

RNG_SEED = 7


def small_png(path: Path, seed: int, mode: str = "L") -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 200)
    img.save(path)
    return path


def openi_set(root: Path, n: int, sixteen_bit: tuple[str, ...] = ()) -> tuple[Path, Path, list[str]]:
    """``n`` one-view studies as OpenI annotations, small PNGs in ``root/images``."""
    images = root / "images"
    images.mkdir(parents=True)
    ids = [f"{100 + k}_1" for k in range(n)]
    for k, rid in enumerate(ids):
        small_png(images / f"{rid}.png", k, "I;16" if rid in sixteen_bit else "L")
    reports = root / "reports.json"
    write_annotations(reports, [{"image_id": rid, "caption": f"Report {rid}."} for rid in ids])
    return reports, images, ids


def write_annotations(path: Path, anns: list) -> None:
    path.write_text(json.dumps({"annotations": anns}), encoding="utf-8")


def run_openi(reports: Path, images: Path, out: Path, *extra: str) -> int:
    return conv.main(["--input", str(reports), "--images_dir", str(images), "--output_dir", str(out), "--quiet",
                      "--workers", "1", "--lang", "en", "--val_ratio", "0", "--test_ratio", "0", *extra])


def summary_of(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    assert s["read"] == s["written"] + s["skipped"], s
    return s


def skipped_rows(out: Path) -> list[list[str]]:
    with open(out / "skipped.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, dialect="excel-tab"))
    assert rows[0] == ["record_id", "reason", "detail"]
    return rows[1:]


def written_ids(out: Path) -> dict[str, dict]:
    rows = {}
    for split in ("train", "val", "test"):
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


# --------------------------------------------------------------------------- a decoder that throws
@pytest.mark.parametrize("n, workers", [(8, "1"), (81, "2")])  # 81 >= 64 jobs: the process pool
def test_truncated_tiff_costs_one_record(tmp_path, n, workers):
    reports, images, ids = openi_set(tmp_path, n)
    (images / f"{ids[3]}.png").unlink()
    (images / f"{ids[3]}.tif").write_bytes(truncated_tiff())
    out = tmp_path / "out"
    assert run_openi(reports, images, out, "--workers", workers) == 0
    s = summary_of(out)
    assert s["written"] == n - 1 and s["skipped"] == 1
    ((rid, reason, detail),) = skipped_rows(out)
    assert rid == ids[3] and reason in ("unreadable image", "truncated image") and f"{ids[3]}.tif" in detail


def test_chestxray14_truncated_tiff_costs_one_record(tmp_path):
    data = make_cxr14(tmp_path / "src", n_patients=4, size=16)
    victim = data["rows"][1][0]
    (data["images"] / victim).write_bytes(truncated_tiff())  # a TIFF under a .png name, cut short
    out = tmp_path / "out"
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(out), "--quiet", "--workers", "1"]) == 0
    s = summary_of(out)
    assert s["written"] == len(data["rows"]) - 1
    assert [r[0] for r in skipped_rows(out) if r[1] in ("unreadable image", "truncated image")] == [victim]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("decoder bug"), KeyError("tag")])
def test_any_decoder_exception_is_one_skip(tmp_path, monkeypatch, error):
    reports, images, ids = openi_set(tmp_path, 3)
    real_open = image_checks.open_checked

    def throwing(path, *a, **kw):  # what a decoder may raise besides ImageRejected
        if Path(path).stem == ids[1]:
            raise error
        return real_open(path, *a, **kw)

    monkeypatch.setattr(image_checks, "open_checked", throwing)
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    assert summary_of(out)["written"] == 2
    ((rid, reason, detail),) = skipped_rows(out)
    assert (rid, reason) == (ids[1], "unreadable image") and type(error).__name__ in detail


def test_dead_worker_is_rechecked_in_process(tmp_path, monkeypatch, capfd):
    """A worker killed by the system (SIGKILL, as the OOM killer sends) breaks the pool; the
    images it had not returned are checked in the main process and the run completes."""
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the killing stand-in reaches the workers through fork")
    reports, images, ids = openi_set(tmp_path, 81)
    parent, real_open = os.getpid(), image_checks.open_checked

    def killed_in_worker(path, *a, **kw):
        if os.getpid() != parent and Path(path).stem == ids[40]:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(image_checks, "open_checked", killed_in_worker)
    out = tmp_path / "out"
    assert run_openi(reports, images, out, "--workers", "2") == 0
    assert "warning: an image-checking process died" in capfd.readouterr().err
    s = summary_of(out)
    assert s["written"] == 81 and s["rechecked_in_process"] > 0


# --------------------------------------------------------------------------- warnings
def test_image_warnings_are_counted_listed_and_written(tmp_path, monkeypatch, capsys):
    reports, images, ids = openi_set(tmp_path, 4)
    real_open = image_checks.open_checked

    def with_warning(path, *a, **kw):  # open_checked's warnings, e.g. a DICOM that is not a radiograph
        checked = real_open(path, *a, **kw)
        if Path(path).stem == ids[2]:
            checked.warnings.append("DICOM modality CT is not a radiograph")
        return checked

    monkeypatch.setattr(image_checks, "open_checked", with_warning)
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("; 1 warnings (written, listed in warnings.tsv)")
    s = summary_of(out)
    assert s["written"] == 4 and s["warnings"] == 1
    assert s["warnings_by_text"] == {"DICOM modality CT is not a radiograph": 1}
    with open(out / "warnings.tsv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh, dialect="excel-tab")) == [["record_id", "warning"],
                                                              [ids[2], "DICOM modality CT is not a radiograph"]]
    assert ids[2] in written_ids(out)


# --------------------------------------------------------------------------- field types
def test_openi_wrong_field_types_are_listed_skips(tmp_path):
    reports, images, ids = openi_set(tmp_path, 8)
    anns = [{"image_id": ids[0], "caption": "Fine."},
            {"image_id": ids[1], "caption": {"findings": "x"}},
            {"image_id": ids[2], "caption": ["a", "b"]},
            {"image_id": ids[3], "caption": "Fine.", "reasoning": 42},
            {"image_id": None, "caption": "no id"},
            "not an object",
            {"image_id": ["x"], "caption": "list id"},
            {"caption": "later row without image_id"},
            {"image_id": ids[4], "caption": "Fine.", "reasoning": "Lungs first."}]
    write_annotations(reports, anns)
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    s = summary_of(out)
    assert s["read"] == len(anns) and set(written_ids(out)) == {ids[0], ids[4]}
    assert s["skipped_by_reason"] == {"no image id": 2, "not a JSON object": 1, "wrong field type": 4}
    details = " ".join(r[2] for r in skipped_rows(out))
    assert "'caption' is an object" in details and "'reasoning' is a number (42)" in details
    assert all("{" not in row["messages"][-1]["content"] for row in written_ids(out).values())


def test_reference_list_record_without_img_is_one_skip(tmp_path):
    _, images, ids = openi_set(tmp_path, 3)
    source = tmp_path / "src.json"
    source.write_text(json.dumps([{"img": f"C:\\old\\{ids[0]}.png", "prompt": "What?", "label": "Fine."},
                                  {"prompt": "no img", "label": "x"},
                                  {"img": f"/old/{ids[1]}.png", "prompt": "What?", "label": {"a": 1}},
                                  {"img": f"/old/{ids[2]}.png", "prompt": "What?", "label": "Fine."}]))
    out = tmp_path / "out"
    assert run_openi(source, images, out) == 0
    assert summary_of(out)["skipped_by_reason"] == {"no image path": 1, "wrong field type": 1}
    assert set(written_ids(out)) == {ids[0], ids[2]}


def test_captions_jsonl_wrong_types_and_bad_lines(tmp_path):
    images = tmp_path / "ct"
    images.mkdir()
    for k in range(4):
        small_png(images / f"s{k}.png", k)
    lines = [json.dumps({"image": "s0.png", "caption": "Slice 0."}), "[1, 2]", "{not json",
             json.dumps({"image": None, "caption": "no image"}), json.dumps({"image": "s1.png", "caption": {"a": 1}}),
             json.dumps({"image": "s2.png"}), json.dumps({"image": "s3.png", "caption": "Slice 3\u2028next."})]
    src = images / "captions.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert convert_captions.main(["--input", str(src), "--output_dir", str(out), "--quiet", "--workers", "1",
                                  "--val_ratio", "0", "--test_ratio", "0"]) == 0
    s = summary_of(out)
    assert s["read"] == 7 and set(written_ids(out)) == {"s0", "s3"}
    assert s["skipped_by_reason"] == {"empty caption": 1, "no image path": 1, "not JSON": 1,
                                      "not a JSON object": 1, "wrong field type": 1}
    assert written_ids(out)["s3"]["messages"][-1]["content"] == "Slice 3\u2028next."


# --------------------------------------------------------------------------- encodings and odd ids
def test_utf8_bom_is_accepted(tmp_path):
    reports, images, ids = openi_set(tmp_path, 3)
    reports.write_bytes(b"\xef\xbb\xbf" + reports.read_bytes())
    assert run_openi(reports, images, tmp_path / "o1") == 0
    lines = [json.dumps({"image": f"{rid}.png", "caption": "Slice."}) for rid in ids]
    (images / "c.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    (images / "c.csv").write_bytes(b"\xef\xbb\xbfimage,caption\n" + "".join(f"{r}.png,Slice.\n" for r in ids).encode())
    for name in ("c.jsonl", "c.csv"):
        out = tmp_path / name
        assert convert_captions.main(["--input", str(images / name), "--output_dir", str(out), "--quiet",
                                      "--workers", "1"]) == 0
        assert summary_of(out)["written"] == 3


def test_latin1_inputs_are_one_error_line(tmp_path, capsys):
    data = make_cxr14(tmp_path / "src", n_patients=2, size=16)
    text = data["csv"].read_text().replace("58,M", "58,Mé", 1)
    data["csv"].write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(tmp_path / "o"), "--quiet"]) == 2
    assert f"is not UTF-8 (byte 0xe9 at offset {offset}); re-save it as UTF-8" in one_error_line(capsys.readouterr().err)
    reports = tmp_path / "r.json"
    reports.write_bytes(json.dumps({"annotations": [{"image_id": "1_1", "caption": "Cardiomégalie."}]},
                                   ensure_ascii=False).encode("latin-1"))
    assert run_openi(reports, data["images"], tmp_path / "o2") == 2
    assert f"{reports} is not UTF-8 (byte 0xe9 at offset " in one_error_line(capsys.readouterr().err)


def test_streamed_csv_names_the_bad_bytes_offset_in_the_whole_file(tmp_path):
    """The one CSV reader streams (MIMIC-CXR's are gzipped, 377k rows): a bad byte past the first
    block, right after a character cut by the block boundary, still has its offset in the file."""
    import gzip

    from medswift.data.pipeline.records import csv_rows

    head = "image,caption\n" + "x.png,ok\n" * 10
    body = head.encode() + b"a" * ((1 << 20) - len(head.encode()) - 1) + "é".encode() + b"\n\xff\n"
    path = tmp_path / "c.csv.gz"
    path.write_bytes(gzip.compress(body))
    with pytest.raises(UsageError) as err:
        list(csv_rows(path, ("image", "caption"), "a captions CSV"))
    offset = body.index(b"\xff")
    assert str(err.value) == f"{path} is not UTF-8 (byte 0xff at offset {offset}); re-save it as UTF-8"
    plain = tmp_path / "c.csv"
    plain.write_text("image,caption\n\n a.png , Fine. \nb.png\n")  # a blank line, a short row
    assert list(csv_rows(plain, ("caption", "image"), "a captions CSV")) == [["Fine.", "a.png"], ["", "b.png"]]


def test_ids_with_tabs_and_newlines_stay_on_one_row(tmp_path):
    reports, images, ids = openi_set(tmp_path, 2)
    odd = ["bad\tid_1", "bad\nid_1", 'quo"te_1', "bad\r\nid_2"]
    write_annotations(reports, [{"image_id": ids[0], "caption": "Fine."}] +
                      [{"image_id": rid, "caption": "x"} for rid in odd])
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    rows = skipped_rows(out)
    assert sorted(r[0] for r in rows) == sorted(odd) and all(len(r) == 3 for r in rows)
    assert all(r[1] == "missing image" for r in rows)


# --------------------------------------------------------------------------- images outside --images_dir
def test_images_outside_images_dir_are_refused(tmp_path):
    images = tmp_path / "ct"
    images.mkdir()
    small_png(images / "in.png", 1)
    outside = small_png(tmp_path / "outside.png", 2)
    (images / "link.png").symlink_to(outside)
    rows = [{"image": "in.png", "caption": "Inside."}, {"image": str(outside), "caption": "Absolute."},
            {"image": "../outside.png", "caption": "Dot-dot."}, {"image": "link.png", "caption": "Symlink."},
            {"image": "/etc/passwd", "caption": "Not ours."}]
    src = tmp_path / "captions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--input", str(src), "--images_dir", str(images), "--quiet", "--workers", "1",
              "--val_ratio", "0.3", "--test_ratio", "0"]
    out = tmp_path / "out"
    assert convert_captions.main(common + ["--output_dir", str(out)]) == 0
    s = summary_of(out)
    assert set(written_ids(out)) == {"in"} and s["skipped_by_reason"] == {"image outside --images_dir": 4}
    # the user can opt in; the symlink and the absolute path are then ordinary records
    out2 = tmp_path / "out2"
    assert convert_captions.main(common + ["--output_dir", str(out2), "--allow_outside_images"]) == 0
    assert set(written_ids(out2)) == {"in", convert_captions.caption_id(str(outside))}
    # one file under three names is one record, so it cannot land in train and val at once
    assert summary_of(out2)["skipped_by_reason"] == {"duplicate image": 2, "not an image": 1}
    # the same for a converter that indexes a folder: a symlink pointing out of it
    reports, openi_images, ids = openi_set(tmp_path / "openi", 2)
    (openi_images / f"{ids[0]}.png").unlink()
    (openi_images / f"{ids[0]}.png").symlink_to(outside)
    out3 = tmp_path / "out3"
    assert run_openi(reports, openi_images, out3) == 0
    assert [r[:2] for r in skipped_rows(out3)] == [[ids[0], "image outside --images_dir"]]


def test_symlink_loops_are_one_listed_skip_each(tmp_path):
    """Issue 16: ``ln -s loop.png images/loop.png`` and a looping folder link aborted a whole conversion
    (DirEntry.is_file() raised ELOOP while indexing the folder): 0 written, the error naming the loop."""
    reports, images, ids = openi_set(tmp_path / "openi", 3)
    (images / f"{ids[0]}.png").unlink()
    (images / f"{ids[0]}.png").symlink_to(f"{ids[0]}.png")  # a link to itself
    (images / "loopdir").symlink_to("loopdir")
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    assert set(written_ids(out)) == set(ids[1:])
    assert [r[:2] for r in skipped_rows(out)] == [[ids[0], "unusable image path"]]
    assert "symlink loop" in skipped_rows(out)[0][2].lower()


@pytest.mark.parametrize("module", [conv, convert_chestxray14, convert_ham10000, convert_captions])
def test_every_converter_has_allow_outside_images(module):
    required = {"reports": ["--input", "x", "--images_dir", "y"], "captions": ["--input", "x"]}
    argv = required.get(module.__name__.rsplit(".", 1)[-1], ["--csv", "x", "--images_dir", "y"])
    assert module.build_parser().parse_args(argv + ["--allow_outside_images"]).allow_outside_images is True


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("case", ["under a regular file", "read-only"])
def test_output_problems_are_one_error_line(tmp_path, capsys, case):
    reports, images, _ = openi_set(tmp_path, 2, sixteen_bit=("100_1",))
    if case == "under a regular file":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "out"
    elif os.geteuid() == 0:  # root writes through permission bits; sysfs refuses everyone
        out = Path("/sys/kernel")
        if not out.is_dir():
            pytest.skip("no folder here that root cannot write")
    else:
        out = tmp_path / "read_only"
        out.mkdir()
        out.chmod(0o500)
    assert run_openi(reports, images, out) == 2
    assert f"cannot write to --output_dir {out}" in one_error_line(capsys.readouterr().err)


def test_rerun_removes_its_own_stale_copies_only(tmp_path, capsys):
    reports, images, ids = openi_set(tmp_path, 3, sixteen_bit=("100_1", "101_1"))
    out = tmp_path / "out"
    assert run_openi(reports, images, out) == 0
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["100_1.png", "101_1.png"]
    (out / "images" / "notes.txt").write_text("mine")
    write_annotations(reports, [{"image_id": rid, "caption": "Again."} for rid in ("100_1", "102_1")])
    capsys.readouterr()
    assert run_openi(reports, images, out) == 0
    assert "removed 1 8-bit copies an earlier run left" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir() if not p.name.startswith(".")) == \
        ["100_1.png", "notes.txt"]
    s = summary_of(out)
    assert s["stale_copies_removed"] == 1 and s["other_files_in_images_kept"] == 1
    referenced = {Path(r["images"][0]).name for r in written_ids(out).values()}
    assert "101_1.png" not in referenced


# --------------------------------------------------------------------------- duplicates
def test_first_valid_record_of_an_id_is_kept(tmp_path):
    data = make_cxr14(tmp_path / "src", n_patients=3, size=16)
    name = data["rows"][0][0]
    header = data["csv"].read_text().splitlines()
    rest = "58,M,PA,1,1,1,1"
    header[1:1] = [f"{name},Alien_Disease,0,1,{rest}"]  # a bad row of the id before its valid one
    header.append(f"{name},Hernia,0,1,{rest}")  # a later valid row: the duplicate
    data["csv"].write_text("\n".join(header) + "\n")
    out = tmp_path / "out"
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(out), "--quiet", "--workers", "1"]) == 0
    summary_of(out)
    kept = written_ids(out)[name]
    assert kept["messages"][-1]["content"] == "Findings: No Finding."  # the first valid row's labels
    rows = [r[:2] for r in skipped_rows(out) if r[0] == name]
    assert sorted(rows) == [[name, "duplicate id"], [name, "unknown label"]]
    # the OpenI converter: an empty report first, then the same id with a report
    reports, images, ids = openi_set(tmp_path / "openi", 2)
    write_annotations(reports, [{"image_id": ids[0], "caption": " "}, {"image_id": ids[0], "caption": "Second."},
                                {"image_id": ids[1], "caption": "Fine."}])
    out2 = tmp_path / "out2"
    assert run_openi(reports, images, out2) == 0
    assert written_ids(out2)[ids[0]]["messages"][-1]["content"] == "Second."
    assert [r[:2] for r in skipped_rows(out2)] == [[ids[0], "empty report"]]


def test_repeated_skip_reasons_are_summarised_not_listed_a_million_times(tmp_path):
    """Issue 16, item 9: 3 million duplicate rows (a 349 KB gzip) once wrote a 276 MB skipped.tsv.
    Here 200,000 copies of one row: 10,000 lines for the reason, then one line with the rest's
    count; summary.json keeps the exact count and read = written + skipped."""
    data = make_cxr14(tmp_path / "src", n_patients=1, size=16)
    header, row = data["csv"].read_text().splitlines()[:2]
    copies = 200_000
    data["csv"].write_text(f"{header}\n{row}\n" + f"{row}\n" * copies)
    out = tmp_path / "out"
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(out), "--quiet", "--workers", "1"]) == 0
    summary = summary_of(out)
    assert summary["skipped_by_reason"] == {"duplicate id": copies} and summary["written"] == 1
    rows = skipped_rows(out)
    cap = outputs.LISTED_PER_REASON
    assert len(rows) == cap + 1 and all(r[1] == "duplicate id" for r in rows)
    assert rows[-1][0] == outputs.MORE_ID and rows[-1][2].startswith(f"{copies - cap} more skipped")
    size = (out / "skipped.tsv").stat().st_size
    print(f"{copies} duplicate rows: skipped.tsv {size / 1024:.0f} KB (the full list: about "
          f"{copies * len(chr(9).join(rows[0]) + chr(10)) / 2**20:.0f} MB)")
    assert size < 1_000_000


def test_skip_list_cap_is_per_reason_and_sorted(tmp_path):
    skipped = [(f"id{k % 7}", "duplicate id", "kept the first") for k in range(9)] + \
              [("b", "missing image", "x"), ("a", "missing image", "y"), ("z", "unknown label", "Alien")]
    counts = outputs.write_skipped(tmp_path / "skipped.tsv", skipped, cap=3)
    assert counts == {"duplicate id": 9, "missing image": 2, "unknown label": 1}
    with open(tmp_path / "skipped.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, dialect="excel-tab"))[1:]
    assert rows == [["id0", "duplicate id", "kept the first"], ["id0", "duplicate id", "kept the first"],
                    ["id1", "duplicate id", "kept the first"],
                    ["*", "duplicate id", rows[3][2]], ["a", "missing image", "y"], ["b", "missing image", "x"],
                    ["z", "unknown label", "Alien"]]
    assert rows[3][2].startswith("6 more skipped for this reason")


def test_captions_datasets_rerun_leaves_no_stale_hf_images(tmp_path):
    from datasets import Dataset, Features, Image as HFImage, Value

    images = tmp_path / "src"
    images.mkdir()
    paths = [str(small_png(images / f"s{k}.png", k)) for k in range(3)]
    Image.open(paths[2]).convert("CMYK").save(images / "s2.jpg")  # a mode PNG cannot hold
    paths[2] = str(images / "s2.jpg")
    out = tmp_path / "out"
    for n in (3, 2):
        ds = Dataset.from_dict({"image": paths[:n], "caption": [f"c{k}" for k in range(n)]},
                               features=Features({"image": HFImage(), "caption": Value("string")}))
        ds.save_to_disk(str(tmp_path / f"hf{n}"))
        assert convert_captions.main(["--input", str(tmp_path / f"hf{n}"), "--output_dir", str(out), "--quiet",
                                      "--workers", "1", "--val_ratio", "0", "--test_ratio", "0"]) == 0
        assert summary_of(out)["written"] == n
    assert sorted(p.name for p in (out / "hf_images").iterdir() if not p.name.startswith(".")) == \
        ["hf_0000000.png", "hf_0000001.png"]
    assert sorted(p.name for p in (out / "images").iterdir() if not p.name.startswith(".")) == []
