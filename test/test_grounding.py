"""Grounding: box CSVs in their real layouts -> Qwen3-VL box JSON -> ms-swift's template -> boxes
again; AP against hand-checked cases; the box reward; the box report card; the tiny model end to end."""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, ROOT, read_jsonl, run
from medswift.data import grounding
from medswift.eval import boxes
from medswift.eval.boxes import Box

CONVERT = str(ROOT / "scripts" / "convert_grounding.py")
CXR14_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"  # NIH's header, unquoted, as shipped
VINDR_HEADER = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
RSNA_HEADER = ["patientId", "x", "y", "width", "height", "Target"]


def png(path: Path, width: int, height: int, box=None) -> Path:
    """A stand-in X-ray of the right size; ``box`` (x1, y1, x2, y2) drawn bright on it."""
    arr = np.full((height, width), 40, dtype=np.uint8)
    if box:
        x1, y1, x2, y2 = map(int, box)
        arr[y1:y2, x1:x2] = 250
    Image.fromarray(arr).save(path)
    return path


def dicom(path: Path, width: int, height: int, box=None) -> Path:
    """A DX DICOM of ``width`` x ``height`` (12 bits in 16), as VinDr-CXR and RSNA ship them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.full((height, width), 500, dtype=np.uint16)
    arr[::7, ::5] = 700  # some texture, so the percentile window is not flat
    if box:
        x1, y1, x2, y2 = map(int, box)
        arr[y1:y2, x1:x2] = 4000
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    ds.Modality = "DX"
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_csv(path: Path, header, rows, gz: bool = False) -> Path:
    buf = io.StringIO()
    if isinstance(header, str):
        buf.write(header + "\n")
    else:
        csv.writer(buf).writerow(header)
    csv.writer(buf).writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def convert(*args) -> subprocess.CompletedProcess:
    return run([PYTHON, CONVERT, "--quiet", *map(str, args)], check=False)


def answer(row: dict) -> list[dict]:
    return json.loads(row["messages"][-1]["content"])


def all_rows(out: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_jsonl(out / f"{s}.jsonl")]


def make_cxr14(root: Path) -> Path:
    images = root / "images"
    images.mkdir()
    rows = []
    for patient in range(1, 9):
        for follow in range(2):
            name = f"{patient:08d}_{follow:03d}.png"
            png(images / name, 1024, 1024)
            rows.append([name, "Atelectasis", "100.5", "200.25", "300", "150", "", "", ""])
    rows += [["00000001_000.png", "Infiltrate", "512", "512", "256", "128", "", "", ""],  # NIH's spelling
             ["00000002_000.png", "Effusion", "900", "100", "200", "50", "", "", ""],  # x + w = 1100 > 1024
             ["00000002_000.png", "Alien", "10", "10", "20", "20", "", "", ""],
             ["00000003_000.png", "Mass", "10", "10", "0", "20", "", "", ""],
             ["00000003_001.png", "Nodule", "ten", "10", "20", "20", "", "", ""],
             ["00000099_000.png", "Mass", "10", "10", "20", "20", "", "", ""]]  # no such image
    return write_csv(root / "BBox_List_2017.csv", CXR14_HEADER, rows)


def test_chestxray14_boxes_checked_split_and_byte_identical(tmp_path):
    csv_path = make_cxr14(tmp_path)
    out = tmp_path / "out"
    proc = convert("--csv", csv_path, "--images_dir", tmp_path / "images", "--output_dir", out)
    assert proc.returncode == 0, proc.stderr
    assert "read 17 = written 16" in proc.stdout and "missing image 1" in proc.stdout
    assert "boxes: read 22, skipped 4" in proc.stdout
    rows = {r["id"]: r for r in all_rows(out)}
    assert len(rows) == 16
    # 100.5/1024*1000 = 98.1 -> 98; (100.5+300)/1024*1000 = 391.1 -> 391; 200.25 -> 196; 350.25 -> 342
    assert answer(rows["00000004_000.png"]) == [{"bbox_2d": [98, 196, 391, 342], "label": "Atelectasis"}]
    # the Infiltrate row is the classification task's Infiltration; sorted by label
    assert [b["label"] for b in answer(rows["00000001_000.png"])] == ["Atelectasis", "Infiltration"]
    skipped_boxes = (out / "skipped_boxes.tsv").read_text()
    for reason in ("box outside the image", "unknown label", "zero or negative area", "coordinates not numbers"):
        assert reason in skipped_boxes
    # 00000002_000 keeps its valid Atelectasis box: a bad box costs the box, not the image
    assert [b["label"] for b in answer(rows["00000002_000.png"])] == ["Atelectasis"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "chestxray14" and summary["boxes"]["skipped"] == 4
    assert summary["boxes"]["on_skipped_images"] == 1 and summary["boxes"]["written"] == 17
    split_of = {}
    for split in ("train", "val", "test"):
        for r in read_jsonl(out / f"{split}.jsonl"):
            assert split_of.setdefault(r["id"].split("_")[0], split) == split, "a patient on two sides"
    again = tmp_path / "again"
    convert("--csv", csv_path, "--images_dir", tmp_path / "images", "--output_dir", again)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "skipped.tsv", "skipped_boxes.tsv"):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def make_vindr(root: Path) -> Path:
    images = root / "train"
    images.mkdir()
    dicom(images / "aaa.dicom", 500, 400)   # three readers, two agree on a nodule
    dicom(images / "bbb.dicom", 300, 600)   # all three: no finding
    dicom(images / "ccc.dicom", 800, 800)   # one reader of three draws an effusion
    dicom(images / "ddd.dicom", 400, 400)
    nf = ["No finding", "14", "", "", "", ""]
    rows = [["aaa", "Nodule/Mass", "8", "R1", "100", "100", "150", "160"],
            ["aaa", "Nodule/Mass", "8", "R2", "104", "98", "152", "158"],
            ["aaa", "Nodule/Mass", "8", "R3", "300", "300", "320", "330"],
            ["aaa", "Cardiomegaly", "3", "R1", "150", "200", "350", "300"],
            ["aaa", "Cardiomegaly", "3", "R2", "160", "205", "345", "300"],
            ["aaa", "Cardiomegaly", "3", "R3", "155", "198", "352", "302"],
            ["bbb", nf[0], nf[1], "R4", *nf[2:]], ["bbb", nf[0], nf[1], "R5", *nf[2:]],
            ["bbb", nf[0], nf[1], "R6", *nf[2:]],
            ["ccc", "Pleural effusion", "10", "R1", "10", "500", "200", "700"],
            ["ccc", nf[0], nf[1], "R2", *nf[2:]], ["ccc", nf[0], nf[1], "R3", *nf[2:]],
            ["ddd", "Aortic enlargement", "0", "R8", "100", "50", "200", "150"],
            ["ddd", "Aortic enlargement", "0", "R9", "100", "50", "200", "150"],
            ["ddd", "Aortic enlargement", "0", "R10", "100", "50", "200", "450"]]  # below 400: outside
    return write_csv(root / "train.csv", VINDR_HEADER, rows)


def test_vindr_fusion_no_finding_and_dicom_sizes(tmp_path):
    csv_path = make_vindr(tmp_path)
    out = tmp_path / "out"
    proc = convert("--csv", csv_path, "--images_dir", tmp_path / "train", "--output_dir", out, "--val_ratio", "0",
                   "--test_ratio", "0")
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in all_rows(out)}
    # aaa: the nodule of R1 and R2 (IoU 0.8) is kept as their mean box, R3's alone is dropped;
    # x on 500 pixels, y on 400: mean (102, 99, 151, 159) -> 204, 248, 302, 398
    got = answer(rows["aaa"])
    assert {"bbox_2d": [204, 248, 302, 398], "label": "Nodule/Mass"} in got
    assert [b["label"] for b in got] == ["Cardiomegaly", "Nodule/Mass"]
    assert answer(rows["bbb"]) == []  # no finding
    assert answer(rows["ccc"]) == []  # one reader of three: no majority
    assert answer(rows["ddd"]) == [{"bbox_2d": [250, 125, 500, 375], "label": "Aortic enlargement"}]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "vindr" and summary["fusion"]["rule"] == "majority"
    assert "more than half of the radiologists" in summary["fusion"]["text"]
    assert summary["boxes"]["dropped_by_fusion"] == 2 and summary["boxes"]["skipped_by_reason"] == {
        "box outside the image": 1}
    assert summary["no_finding_images"] == 2
    # the DICOMs became 8-bit copies of their decoded size, which the coordinates are relative to
    assert Image.open(rows["aaa"]["images"][0]).size == (500, 400)
    union = tmp_path / "union"
    convert("--csv", csv_path, "--images_dir", tmp_path / "train", "--output_dir", union, "--fusion", "union",
            "--val_ratio", "0", "--test_ratio", "0")
    assert len(answer({r["id"]: r for r in all_rows(union)}["aaa"])) == 6


def test_rsna_gzipped_phrase_grounding_in_chinese(tmp_path):
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    for pid in ("p1", "p2", "p3"):
        dicom(images / f"{pid}.dcm", 1024, 1024)
    rows = [["p1", "264", "152", "213", "379", "1"], ["p1", "562", "152", "256", "453", "1"],
            ["p2", "", "", "", "", "0"], ["p3", "100", "100", "50", "50", "1"]]
    csv_path = write_csv(tmp_path / "stage_2_train_labels.csv.gz", RSNA_HEADER, rows, gz=True)
    out = tmp_path / "out"
    proc = convert("--csv", csv_path, "--images_dir", images, "--output_dir", out, "--task", "ground",
                   "--lang", "zh", "--val_ratio", "0", "--test_ratio", "0")
    assert proc.returncode == 0, proc.stderr
    assert "read 3 = written 2" in proc.stdout and "no finding to ground (--task ground) 1" in proc.stdout
    rows = {r["id"]: r for r in all_rows(out)}
    assert set(rows) == {"p1__lung_opacity", "p3__lung_opacity"}
    assert "肺部阴影" in rows["p1__lung_opacity"]["messages"][0]["content"]
    assert answer(rows["p1__lung_opacity"]) == [{"bbox_2d": [258, 148, 466, 519], "label": "Lung Opacity"},
                                                {"bbox_2d": [549, 148, 799, 591], "label": "Lung Opacity"}]


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n", "cannot tell the layout"),
    (b"\x1f\x8b\x08broken", "damaged gzip"),
    (b"image_id,class_name\n\xff\xfe\n", "not UTF-8"),
])
def test_bad_csv_is_one_line(tmp_path, content, message):
    path = tmp_path / "boxes.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "images").mkdir()
    proc = convert("--csv", path, "--images_dir", tmp_path / "images", "--output_dir", tmp_path / "out")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_fusion_rule_by_hand():
    a, b, far = Box("N", 0, 0, 10, 10), Box("N", 1, 0, 11, 10), Box("N", 50, 50, 60, 60)
    fused, dropped = grounding.fuse([("R1", a), ("R2", b), ("R3", far)], 3, "majority", 0.4)
    assert fused == [Box("N", 0.5, 0, 10.5, 10)] and dropped == 1
    # one radiologist's two boxes never vote twice for the same cluster
    fused, dropped = grounding.fuse([("R1", a), ("R1", b)], 3, "majority", 0.4)
    assert fused == [] and dropped == 2
    assert grounding.fuse([("R1", a), ("R2", far)], 2, "union", 0.4) == ([a, far], 0)
