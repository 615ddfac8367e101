"""Grounding: box CSVs in their real layouts -> Qwen3-VL box JSON -> ms-swift's template -> boxes
again; AP against hand-checked cases; the box reward; the box report card; the tiny model end to end."""
from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import PYTHON, ROOT, read_jsonl, run
from medswift.core import boxes
from medswift.core.boxes import Box
from medswift.data.converters import grounding
from medswift.eval import box_card
from medswift.posttrain import rewards

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
    assert all(r["solution"] == r["messages"][-1]["content"] for r in rows.values())  # GRPO's reference column
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


def test_forced_format_names_the_missing_columns(tmp_path):
    csv_path = make_vindr(tmp_path)
    proc = convert("--csv", csv_path, "--images_dir", tmp_path / "train", "--output_dir", tmp_path / "out",
                   "--format", "rsna")
    assert proc.returncode == 2 and "lacks column(s) patientId, x, y, width, height, Target of the rsna layout" \
        in proc.stderr


def test_boxes_under_one_unit_non_ascii_numbers_and_crowded_images_are_listed(tmp_path):
    """A box under one unit of 1000 after rounding (it would be written as a line: IoU 0 for a perfect
    answer), coordinates in Arabic-Indic digits or with underscores (float() reads both), and an image
    with more box rows than --max_boxes_per_image: each listed, none written, nothing lost."""
    images = tmp_path / "images"
    images.mkdir()
    for patient in range(1, 5):
        png(images / f"{patient:08d}_000.png", 4000, 64)
    rows = [["00000001_000.png", "Mass", "100", "10", "1", "20", "", "", ""],  # 0.25 of a unit wide
            ["00000001_000.png", "Nodule", "2000", "10", "400", "20", "", "", ""],
            ["00000002_000.png", "Mass", "١٠٠", "10", "400", "20", "", "", ""],
            ["00000002_000.png", "Mass", "1_000", "10", "400", "20", "", "", ""],
            ["00000002_000.png", "Nodule", "2000", "10", "400", "20", "", "", ""],
            *[["00000003_000.png", "Nodule", str(10 * k), "10", "400", "20", "", "", ""] for k in range(6)],
            ["00000004_000.png", "Nodule", "2000", "10", "400", "20", "", "", ""]]
    csv_path = write_csv(tmp_path / "BBox_List_2017.csv", CXR14_HEADER, rows)
    out = tmp_path / "out"
    proc = convert("--csv", csv_path, "--images_dir", images, "--output_dir", out, "--max_boxes_per_image", "5",
                   "--val_ratio", "0", "--test_ratio", "0")
    assert proc.returncode == 0, proc.stderr
    written = {r["id"]: answer(r) for r in all_rows(out)}
    assert written == {name: [{"bbox_2d": [500, 156, 600, 469], "label": "Nodule"}]
                       for name in ("00000001_000.png", "00000002_000.png", "00000004_000.png")}
    skipped_boxes = (out / "skipped_boxes.tsv").read_text()
    assert "zero area at 0-1000" in skipped_boxes and skipped_boxes.count("coordinates not numbers") == 2
    skipped = (out / "skipped.tsv").read_text()
    assert "00000003_000.png\ttoo many boxes\t6 box rows; at most 5 per image (--max_boxes_per_image)" in skipped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["boxes"]["read"] == 12 and summary["boxes"]["skipped"] == 3
    assert summary["boxes"]["on_skipped_images"] == 6 and summary["boxes"]["written"] == 3


BLANK_MB = 100


def test_a_gzipped_csv_of_blank_lines_is_read_in_bounded_memory(tmp_path):
    """A small .csv.gz that inflates to 100 MB of blank lines, then a real row: streamed, the blank lines
    counted, the row written; the converter's peak memory stays far below the inflated size (and an
    address-space ceiling keeps a regression from taking the machine's memory)."""
    images = tmp_path / "images"
    images.mkdir()
    png(images / "00000001_000.png", 1024, 1024)
    csv_path = tmp_path / "BBox_List_2017.csv.gz"
    with gzip.open(csv_path, "wb", compresslevel=9) as f:
        f.write((CXR14_HEADER + "\n").encode())
        for _ in range(BLANK_MB):
            f.write(b"\n" * (1 << 20))
        f.write(b"00000001_000.png,Mass,100,100,200,200,,,\n")
    assert csv_path.stat().st_size < 1 << 20
    out = tmp_path / "out"
    probe = ("import resource, runpy, sys\n"
             "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
             f"sys.path.insert(0, {str(ROOT / 'scripts')!r})  # this checkout's library, as the script itself gets\n"
             f"sys.argv = ['convert_grounding.py', '--quiet', '--csv', {str(csv_path)!r}, '--images_dir', "
             f"{str(images)!r}, '--output_dir', {str(out)!r}, '--val_ratio', '0', '--test_ratio', '0']\n"
             "try:\n"
             f"    runpy.run_path({CONVERT!r}, run_name='__main__')\n"
             "finally:\n"
             # VmHWM is this process image's own peak; ru_maxrss keeps the forking pytest worker's
             "    print('peak_kb', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    proc = run([PYTHON, "-c", probe], check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mb = int(proc.stdout.split("peak_kb")[-1].split()[0]) / 1024
    assert peak_mb < 400, peak_mb
    assert [answer(r) for r in all_rows(out)] == [[{"bbox_2d": [98, 98, 293, 293], "label": "Mass"}]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["csv_blank_lines"] == BLANK_MB << 20 and summary["csv_rows"] == 1


def test_majority_fusion_of_many_boxes_matches_the_rule():
    """Fusion keeps running means: the same clusters as the rule (each box joins the cluster whose mean
    overlaps it most), for several readers and overlapping boxes."""
    readers = ["R1", "R2", "R3"]
    drawn = [(r, Box("N", 10 * k + j, 0, 10 * k + j + 8, 8)) for k in range(30) for j, r in enumerate(readers)]
    fused, dropped = grounding.fuse(drawn, 3, "majority", 0.4)
    assert dropped == 0 and len(fused) == 30
    assert fused[0] == Box("N", 1.0, 0.0, 9.0, 8.0)


def test_fusion_rule_by_hand():
    a, b, far = Box("N", 0, 0, 10, 10), Box("N", 1, 0, 11, 10), Box("N", 50, 50, 60, 60)
    fused, dropped = grounding.fuse([("R1", a), ("R2", b), ("R3", far)], 3, "majority", 0.4)
    assert fused == [Box("N", 0.5, 0, 10.5, 10)] and dropped == 1
    # one radiologist's two boxes never vote twice for the same cluster
    fused, dropped = grounding.fuse([("R1", a), ("R1", b)], 3, "majority", 0.4)
    assert fused == [] and dropped == 2
    assert grounding.fuse([("R1", a), ("R2", far)], 2, "union", 0.4) == ([a, far], 0)


def test_round_trip_through_ms_swift_qwen3_vl_template(tiny_model, tmp_path, monkeypatch):
    """A box drawn on a synthetic image -> the converter -> ms-swift's Qwen3-VL template (the
    training labels) -> parsed back: within one unit of the drawn box on the 0-1000 scale, and
    equal to what ms-swift itself writes for the same box given in pixels (``objects``,
    ``bbox_type: real``, QWENVL_BBOX_FORMAT=new)."""
    monkeypatch.setenv("QWENVL_BBOX_FORMAT", "new")
    from swift.model import get_processor
    from swift.template import get_template

    width, height, drawn = 1500, 1100, (301, 223, 607, 551)
    (tmp_path / "img").mkdir()
    png(tmp_path / "img" / "xr1.png", width, height, drawn)
    csv_path = write_csv(tmp_path / "train.csv", VINDR_HEADER, [["xr1", "Nodule/Mass", "8", "R1", *drawn]])
    out = tmp_path / "out"
    assert convert("--csv", csv_path, "--images_dir", tmp_path / "img", "--output_dir", out, "--val_ratio", "0",
                   "--test_ratio", "0").returncode == 0
    (row,) = all_rows(out)

    processor = get_processor(str(tiny_model), model_type="qwen3_vl", download_model=False)
    template = get_template(processor, max_pixels=64 * 32 * 32)
    template.set_mode("train")
    assert template.norm_bbox == "norm1000" and template.bbox_format == "new"

    def trained_text(record: dict) -> str:
        labels = [t for t in template.encode(record)["labels"] if t != -100]
        return processor.tokenizer.decode(labels).replace("<|im_end|>", "").strip()

    ours = boxes.parse_boxes(trained_text({"messages": row["messages"], "images": row["images"]}))
    expected = [v / size * 1000 for v, size in zip(drawn, (width, height, width, height))]
    (box,) = ours
    assert box.label == "Nodule/Mass"
    assert all(abs(got - want) <= 1 for got, want in zip((box.x1, box.y1, box.x2, box.y2), expected))
    swift_own = {"messages": [row["messages"][0], {"role": "assistant",
                                                   "content": '[{"bbox_2d": <bbox>, "label": "<ref-object>"}]'}],
                 "images": row["images"], "objects": {"ref": ["Nodule/Mass"], "bbox": [list(drawn)],
                                                      "bbox_type": "real"}}
    assert boxes.parse_boxes(trained_text(swift_own)) == ours


def test_box_text_parsing():
    assert boxes.parse_boxes("[]") == []
    text = '```json\n[{"bbox_2d": [10, 20, 5, 40], "label": "Nodule"}]\n```'
    assert boxes.parse_boxes(text) == [Box("Nodule", 5, 20, 10, 40)]  # corners put in order, fences removed
    assert boxes.parse_boxes('<think>where?</think>[{"bbox_2d": [1, 2, 3, 4], "label": "A"}]') == [Box("A", 1, 2, 3, 4)]
    for bad in ("no boxes here", '[{"bbox_2d": [1, 2, 3], "label": "A"}]', '[{"bbox_2d": [1, 2, 3, "x"]}]',
                "[" * 100000, None, '{"a": 1}'):
        assert boxes.parse_boxes(bad) is None
    assert boxes.format_boxes([Box("A", 1, 2, 3, 4)]) == '[{"bbox_2d": [1, 2, 3, 4], "label": "A"}]'


def rows_of(pairs) -> list[dict]:
    """Prediction rows as batch inference writes them: (reference boxes, predicted answer text)."""
    return [{"key": f"k{i}", "image": f"img{i}.png", "reference": boxes.format_boxes(ref), "response": pred}
            for i, (ref, pred) in enumerate(pairs)]


A1, A2 = Box("A", 100, 100, 300, 300), Box("A", 500, 500, 700, 700)
B1 = Box("B", 100, 600, 200, 800)


def test_ap_hand_checked_cases():
    fmt = boxes.format_boxes
    perfect = box_card.score_grounding(rows_of([([A1], fmt([A1])), ([A2, B1], fmt([A2, B1]))]), n_boot=0)
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0)
    assert perfect["mean_iou"] == 1.0
    # shifted by 120 of 200: IoU (80*200)/(2*40000-16000) = 0.25 < 0.5 -> AP 0 at every threshold
    shifted = Box("A", 220, 100, 420, 300)
    assert boxes.iou(A1, shifted) == pytest.approx(0.25)
    s = box_card.score_grounding(rows_of([([A1], fmt([shifted]))]), n_boot=0)
    assert s["map50"] == 0.0 and s["map"] == 0.0 and s["mean_iou"] == pytest.approx(0.25)
    # a duplicate of a right box after it: a false positive at recall 1; COCO's interpolated
    # precision (the best precision at this recall or beyond) keeps AP at 1, IoU per query halves
    dup = box_card.score_grounding(rows_of([([A1], fmt([A1, A1]))]), n_boot=0)
    assert dup["map50"] == pytest.approx(1.0) and dup["mean_iou"] == pytest.approx(0.5)
    # one hit and one miss (a box far off) over two images: recall reaches 0.5 at precision 1,
    # so 51 of COCO's 101 recall points have precision 1: AP = 51/101
    half = box_card.score_grounding(rows_of([([A1], fmt([A1])), ([A1], fmt([A2]))]), n_boot=0)
    assert half["map50"] == pytest.approx(51 / 101)
    # a missed class: A perfect, B never predicted -> mAP (1 + 0) / 2; an invalid answer predicts nothing
    missed = box_card.score_grounding(rows_of([([A1, B1], fmt([A1])), ([A2], "not JSON")]), n_boot=0)
    assert missed["per_finding"]["B"]["ap50"] == 0.0 and missed["per_finding"]["A"]["ap50"] == pytest.approx(51 / 101)
    assert missed["map50"] == pytest.approx((51 / 101 + 0) / 2)
    assert missed["invalid"] == 1 and missed["invalid_share"] == 0.5


def test_bootstrap_over_images_and_maintained_ap():
    """Intervals come from resampling images; the full-set number is pycocotools' own."""
    fmt = boxes.format_boxes
    rows = rows_of([([A1], fmt([A1]))] * 6 + [([A2], fmt([A1]))] * 4)
    s = box_card.score_grounding(rows, n_boot=200, seed=0)
    lo, hi = s["ci95"]["map50"]
    assert 0 <= lo < s["map50"] < hi <= 1
    assert s["ci95"]["mean_iou"][0] < 0.6 < s["ci95"]["mean_iou"][1]
    assert s["ci95"]["per_finding"]["A"]["ap50"] == s["ci95"]["map50"]  # one finding: its AP is the mAP
    assert box_card.score_grounding(rows, n_boot=200, seed=0)["ci95"] == s["ci95"]  # seeded


def test_soft_f1_box_reward_by_hand():
    # one-to-one: two predictions on one reference box count once (precision 1/2, recall 1)
    assert boxes.soft_f1([A1, A1], [A1]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert boxes.soft_f1([], []) == 1.0 and boxes.soft_f1([A1], []) == 0.0 and boxes.soft_f1([], [A1]) == 0.0
    # Hungarian matching picks the pairing with the larger IoU sum, labels must agree
    assert boxes.soft_f1([Box("B", 100, 100, 300, 300)], [A1]) == 0.0
    shifted = Box("A", 220, 100, 420, 300)
    assert boxes.soft_f1([shifted, A2], [A1, A2]) == pytest.approx((0.25 + 1) / 2)
    assert rewards.box_reward("garbage", boxes.format_boxes([A1])) == 0.0
    assert rewards.box_reward("[]", "[]") == 1.0 and rewards.box_reward("[]", "a report") is None


def test_report_card_detects_box_rows_and_draws(tmp_path):
    """scripts/evaluate.py on box rows: the box card, with map50 in metrics.json and both pictures."""
    images = tmp_path / "img"
    images.mkdir()
    fmt = boxes.format_boxes
    rows = []
    for i in range(5):
        path = png(images / f"x{i}.png", 320, 256, (32, 64, 160, 128))
        ref = [Box("Nodule/Mass", 100, 250, 500, 500)]
        pred = fmt(ref) if i < 3 else ("I see nothing" if i == 3 else fmt([Box("Nodule/Mass", 600, 600, 900, 900)]))
        rows.append({"key": str(path), "id": f"x{i}", "image": str(path), "images": [str(path)], "control": False,
                     "prompt": "Find every abnormality", "response": pred, "reference": fmt(ref)})
    rows.append({"key": "empty", "id": "empty", "image": str(images / "x0.png"), "response": "[]", "reference": "[]"})
    preds = tmp_path / "pred.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds), "--output_dir",
                str(tmp_path / "card"), "--bootstrap", "100"])
    assert "mAP@0.5" in proc.stdout and "For research only" in proc.stdout
    m = json.loads((tmp_path / "card" / "metrics.json").read_text())
    assert m["task"] == "grounding" and m["invalid"] == 1 and m["n"] == 6 and m["images"] == 5
    # 3 hits, then (in answer order) a miss and a false positive: recall 3/5 at precision 1
    assert m["map50"] == pytest.approx(61 / 101) and len(m["ci95"]["map50"]) == 2
    assert set(m["per_finding"]) == {"Nodule/Mass"} and m["provenance"]["predictions_sha256"]
    for name in ("boxes_grid.png", "ap_per_finding.png", "report.md"):
        assert (tmp_path / "card" / name).stat().st_size > 1000
    grid = np.asarray(Image.open(tmp_path / "card" / "boxes_grid.png").convert("RGB")).reshape(-1, 3).astype(int)
    green = ((grid[:, 1] > 150) & (grid[:, 0] < 80) & (grid[:, 2] < 150)).sum()
    red = ((grid[:, 0] > 200) & (grid[:, 1] < 80)).sum()
    assert green > 100 and red > 100, "reference and predicted boxes drawn in two colours"
    assert "research only" in (tmp_path / "card" / "report.md").read_text().lower()


def card_of(tmp_path: Path, rows: list[dict], name: str = "card") -> dict:
    preds = tmp_path / f"{name}.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(preds), "--output_dir",
                str(tmp_path / name), "--bootstrap", "20"], check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_box_card_is_decided_on_whole_rows_and_caps_boxes_by_count(tmp_path):
    """A reference of 400 boxes (over 20,000 characters, the text card's cut) keeps the file on the box
    card; the card scores each row's first MAX_SCORED_BOXES boxes and lists the rows it cut."""
    many = [Box("Nodule/Mass", 2 * k % 990, 5, 2 * k % 990 + 10, 15) for k in range(400)]
    one = [Box("Nodule/Mass", 100, 250, 500, 500)]
    rows = [{"key": f"r{i}", "response": boxes.format_boxes(one), "reference": boxes.format_boxes(one)}
            for i in range(3)]
    rows.append({"key": "crowded", "response": boxes.format_boxes(many), "reference": boxes.format_boxes(many)})
    assert len(rows[-1]["reference"]) > 20_000
    m = card_of(tmp_path, rows)
    assert m["task"] == "grounding" and m["n"] == 4 and m["invalid"] == 0, m.get("task")
    cap = box_card.MAX_SCORED_BOXES
    assert m["per_finding"]["Nodule/Mass"]["reference_boxes"] == 3 + cap
    for field in ("reference", "response"):
        assert f"crowded: {field} has more than {cap} boxes; the first {cap} were scored" in m["problems"]
    assert "more than" in (tmp_path / "card" / "report.md").read_text()


def test_box_card_lists_odd_images_fields_and_decompression_bombs(tmp_path):
    """Rows whose ``images`` is an object or a number, and an image declaring 15000x15000 pixels: scored,
    listed, no traceback; the grid draws the rest."""
    from helpers import BUNDLED_IMAGES, png_declaring

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring((15000, 15000), BUNDLED_IMAGES / "2_1.png"))
    good = png(tmp_path / "good.png", 320, 256)
    ref = boxes.format_boxes([Box("Nodule/Mass", 100, 250, 500, 500)])
    rows = [{"key": "object", "images": {"a": 1}, "response": ref, "reference": ref},
            {"key": "number", "images": 5, "response": ref, "reference": ref},
            {"key": "paths of numbers", "images": [7], "response": ref, "reference": ref},
            {"key": "bomb", "images": [str(bomb)], "response": ref, "reference": ref},
            {"key": "good", "images": [str(good)], "response": ref, "reference": ref}]
    m = card_of(tmp_path, rows)
    assert m["task"] == "grounding" and m["n"] == 5 and m["map50"] == pytest.approx(1.0)
    problems = "\n".join(m["problems"])
    for key, kind in (("object", "dict"), ("number", "int"), ("paths of numbers", "list")):
        assert f"{key}: images is not a list of paths ({kind})" in problems, problems
    assert "bomb: image not drawn (image too large)" in problems, problems
    assert "![boxes](boxes_grid.png) (1 images" in (tmp_path / "card" / "report.md").read_text()


def test_tiny_model_trains_infers_and_is_scored_on_a_grounding_split(tiny_model, tmp_path):
    """A grounding DATA_DIR through the unchanged launcher, batch_infer.py and evaluate.py."""
    csv_path = make_cxr14(tmp_path)
    data = tmp_path / "boxes_swift"
    assert convert("--csv", csv_path, "--images_dir", tmp_path / "images", "--output_dir", data).returncode == 0
    out = tmp_path / "lora"
    run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps", "1"],
        env={"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64", "MODEL": str(tiny_model), "DATA_DIR": str(data),
             "VAL_FILE": "none", "OUTPUT_DIR": str(out), "GLOBAL_BATCH": "2", "MICRO_BATCH": "2", "SAVE_STEPS": "1"},
        timeout=900)
    (ckpt,) = sorted(out.glob("v*/checkpoint-*"))
    pred = tmp_path / "pred.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(data / "val.jsonl"), "--adapter_path",
         str(ckpt), "--max_new_tokens", "8", "--output_file", str(pred), "--quiet"], timeout=900)
    rows = read_jsonl(pred)
    val = read_jsonl(data / "val.jsonl")
    assert len(rows) == len(val) > 0
    for row in rows:  # the raw answer is kept; boxes parsed when (and only when) it is box JSON
        assert isinstance(row["response"], str) and "boxes" in row
        assert (row["boxes"] is None) == (boxes.parse_boxes(row["response"]) is None)
        assert boxes.parse_boxes(row["reference"])
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(pred), "--output_dir",
                str(tmp_path / "card"), "--bootstrap", "50"])
    m = json.loads((tmp_path / "card" / "metrics.json").read_text())
    assert m["task"] == "grounding" and "map50" in m and m["n"] == len(rows)
    assert m["provenance"]["rows_scored"] == len(rows)
    assert "box answers" in proc.stdout


def test_box_reward_registered_through_ms_swift_plugin_loader():
    """Loaded the way ``swift rlhf --external_plugins`` loads it, called the way GRPO calls a reward."""
    from swift.rewards import orms
    from swift.utils import import_external_file

    import_external_file(str(ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py"))
    reward = orms["medswift_boxes"]()
    ref = boxes.format_boxes([A1, A2])
    got = reward([boxes.format_boxes([A1, A2]), boxes.format_boxes([Box("A", 220, 100, 420, 300), A2]),
                  "no boxes", "[]", "[]"], solution=[ref, ref, ref, ref, "[]"], trainer_state=None)
    assert got == [pytest.approx(1.0), pytest.approx((0.25 + 1) / 2), 0.0, 0.0, 1.0]


def test_demo_draws_the_boxes_of_an_answer(tmp_path):
    """The demo's annotated image: the boxes of a box answer in the first view's pixels; nothing for
    a report; the "find abnormalities" prompt in each language is among the page's prompts."""
    from app import gradio_app as app

    image = Image.open(png(tmp_path / "x.png", 500, 400)).convert("RGB")
    state = {"images": [image], "messages": [
        {"role": "user", "content": "<image>" + app.find_abnormalities("en")},
        {"role": "assistant", "content": '[{"bbox_2d": [100, 250, 500, 1000], "label": "Nodule/Mass"}]'}]}
    shown, annotations = app.answer_boxes(state)
    assert shown is image and annotations == [((50, 100, 250, 400), "Nodule/Mass")]
    state["messages"][-1]["content"] = "[]"
    assert app.answer_boxes(state) == (image, [])
    state["messages"][-1]["content"] = "No acute cardiopulmonary abnormality."
    assert app.answer_boxes(state) is None and app.answer_boxes(None) is None
    for lang in ("zh", "en"):
        prompt = app.find_abnormalities(lang)
        assert prompt in app.template_choices(lang) and app.resolve_prompt(lang, prompt, "") == prompt
    # AnnotatedImage takes exactly this value
    import gradio as gr

    value = gr.AnnotatedImage().postprocess(app.answer_boxes({**state, "messages": state["messages"][:1] + [
        {"role": "assistant", "content": '[{"bbox_2d": [1, 2, 300, 400], "label": "A"}]'}]}))
    assert [a.label for a in value.annotations] == ["A"]
    from medswift.core import models

    page = app.build_demo(app.ReportChat(None, models.resolve(None, None))).config
    assert any(c.get("props", {}).get("elem_id") == "boxes" and c["type"] == "annotatedimage"
               for c in page["components"])


def test_box_reward_inside_a_real_grpo_step(tiny_model, tmp_path):
    """``swift rlhf --rlhf_type grpo`` on a grounding split with the plugin: the ``solution`` column reaches
    the reward (it raises without it) and its mean is logged (0 here: a random model writes no box JSON)."""
    csv_path = make_cxr14(tmp_path)
    data = tmp_path / "boxes_swift"
    assert convert("--csv", csv_path, "--images_dir", tmp_path / "images", "--output_dir", data).returncode == 0
    run([str(ROOT / ".venv" / "bin" / "swift"), "rlhf", "--rlhf_type", "grpo", "--model", str(tiny_model),
         "--model_type", "qwen3_vl", "--tuner_type", "lora", "--dataset", str(data / "train.jsonl"),
         "--external_plugins", str(ROOT / "scripts" / "swift_plugins" / "medswift_rewards.py"),
         "--reward_funcs", "medswift_boxes", "--num_generations", "2", "--max_completion_length", "8",
         "--per_device_train_batch_size", "2", "--max_steps", "1", "--use_vllm", "false", "--torch_dtype", "float32",
         "--check_model", "false", "--report_to", "none", "--truncation_strategy", "delete", "--output_dir",
         str(tmp_path / "grpo")], env={"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "IMAGE_MAX_TOKEN_NUM": "64"},
        timeout=900, cwd=tmp_path)
    (log,) = (tmp_path / "grpo").glob("v*/logging.jsonl")
    first = json.loads(log.read_text().splitlines()[0])
    assert first["rewards/MedSwiftBoxes/mean"] == 0.0 and first["global_step/max_steps"] == "1/1"
