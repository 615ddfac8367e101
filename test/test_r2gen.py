"""R2Gen's annotation.json (IU-Xray and MIMIC-CXR flavours): official split kept (a test study never
reaches train), items as multi-view samples in the given order, --unit image, every skip reason,
detection, byte-identical re-runs. No model is loaded here."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, read_jsonl, run
from medswift.data.readers import iu_xray
from medswift.data.readers import r2gen_annotation
from medswift.data.converters import reports as conv


def save_images(folder: Path, paths: list[str]) -> None:
    base = Image.open(BUNDLED_IMAGES / "2_2.png").convert("L").resize((64, 64))
    for k, rel in enumerate(paths):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        base.rotate(k).save(folder / rel)


def iu_item(study: str, split: str, views=(0, 1), report: str | None = None, **over) -> dict:
    item = {"id": study, "report": report or f"The heart size is normal for {study}. Lungs are clear. XXXX.",
            "image_path": [f"{study}/{v}.png" for v in views], "split": split}
    item.update(over)
    return item


@pytest.fixture(scope="module")
def iu(tmp_path_factory) -> tuple[Path, Path]:
    """R2Gen's IU-Xray annotation.json and images/<id>/<k>.png: good items of 1-3 views in each split,
    and one item for each way an item can be unusable."""
    root = tmp_path_factory.mktemp("r2gen_iu")
    images = root / "images"
    (root / "outside.png").parent.mkdir(exist_ok=True)
    save_images(root, ["outside.png"])  # a real image, but beside the images folder, not in it
    train = [iu_item("CXR1_IM-0001", "train"), iu_item("CXR2_IM-0002", "train", views=(1, 0)),  # given order kept
             iu_item("CXR3_IM-0003", "train"), iu_item("CXR4_IM-0004", "train", views=(0,)),
             iu_item("CXR90_IM-0090", "train", report=None) | {"report": 5},  # a report that is a number
             iu_item("CXR91_IM-0091", "train") | {"image_path": ["../outside.png"]},  # escapes the folder
             iu_item("CXR92_IM-0092", "train"),  # its files are absent
             iu_item("CXR93_IM-0093", "test"),  # under "train" but says test
             iu_item("CXR94_IM-0094", "train", report="   "),  # empty report
             iu_item("CXR10_IM-0010", "train"),  # also in test: test wins
             iu_item("CXR13_IM-0013", "train"),  # in test too, where it is unusable: still never in train
             42]  # not an object
    val = [iu_item("CXR5_IM-0005", "val")]
    test = [iu_item("CXR10_IM-0010", "test"), iu_item("CXR11_IM-0011", "test"),
            iu_item("CXR12_IM-0012", "test", views=(0, 1, 2)), iu_item("CXR13_IM-0013", "test", report=" ")]
    annotation = root / "annotation.json"
    annotation.write_text(json.dumps({"train": train, "val": val, "test": test}))  # json.dump's layout, as R2Gen's
    present = [p for it in train + val + test if isinstance(it, dict) and not it["id"].startswith(("CXR91", "CXR92"))
               and isinstance(it["image_path"], list) for p in it["image_path"]]
    save_images(images, sorted(set(present)))
    return annotation, images


def convert(annotation: Path, images: Path, out: Path, *extra: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = conv.main(["--input", str(annotation), "--images_dir", str(images), "--output_dir", str(out),
                        "--lang", "en", "--quiet", *extra])
    lines = buf.getvalue().splitlines()
    return rc, lines[0] if lines else ""


def by_id(out: Path) -> dict[str, tuple[str, dict]]:
    return {s["id"]: (split, s) for split in ("train", "val", "test") for s in read_jsonl(out / f"{split}.jsonl")}


def skip_rows(out: Path) -> dict[str, tuple[str, str]]:
    rows = [r.split("\t") for r in (out / "skipped.tsv").read_text().splitlines()[1:]]
    return {r[0]: (r[1], r[2]) for r in rows}


def test_official_split_items_as_studies_and_every_skip(iu, tmp_path):
    annotation, images = iu
    out = tmp_path / "out"
    rc, line = convert(annotation, images, out)
    assert rc == 0
    assert line == ("read 17 = written 8 (train 4, val 1, test 3) + skipped 9 (duplicate id 2, empty report 2, "
                    "image outside --images_dir 1, missing image 1, not a JSON object 1, "
                    "split disagrees with its key 1, wrong field type 1); 1 warnings (written, listed in warnings.tsv)")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["format"], summary["unit"], summary["split"], summary["section"], summary["r2gen_flavour"]) == \
        ("r2gen", "study", "official", None, "iu_xray")
    assert summary["read"] == summary["written"] + summary["skipped"]
    rows = by_id(out)
    splits = {rid: split for rid, (split, _) in rows.items()}
    assert splits == {"CXR1_IM-0001": "train", "CXR2_IM-0002": "train", "CXR3_IM-0003": "train",
                      "CXR4_IM-0004": "train", "CXR5_IM-0005": "val", "CXR10_IM-0010": "test",
                      "CXR11_IM-0011": "test", "CXR12_IM-0012": "test"}
    # an official test study stays in test although the train list names it too
    assert "CXR10_IM-0010" not in {s["id"] for s in read_jsonl(out / "train.jsonl")}
    assert skip_rows(out)["CXR10_IM-0010"][0] == "duplicate id"
    assert not any(s["id"].startswith("CXR13") for s in read_jsonl(out / "train.jsonl"))
    # the item's images in the order the file gives them, one <image> tag each
    rel = lambda s: [str(Path(p).relative_to(images.resolve())) for p in s["images"]]  # noqa: E731
    assert rel(rows["CXR1_IM-0001"][1]) == ["CXR1_IM-0001/0.png", "CXR1_IM-0001/1.png"]
    assert rel(rows["CXR2_IM-0002"][1]) == ["CXR2_IM-0002/1.png", "CXR2_IM-0002/0.png"]
    assert rel(rows["CXR4_IM-0004"][1]) == ["CXR4_IM-0004/0.png"]
    assert rel(rows["CXR12_IM-0012"][1]) == ["CXR12_IM-0012/0.png", "CXR12_IM-0012/1.png"]  # --max_views 2
    assert rows["CXR1_IM-0001"][1]["messages"][0]["content"].startswith("<image><image>")
    assert rows["CXR1_IM-0001"][1]["messages"][1]["content"] == \
        "The heart size is normal for CXR1_IM-0001. Lungs are clear. XXXX."
    skips = skip_rows(out)
    assert skips["CXR90_IM-0090"] == ("wrong field type", "train #4: 'report' is a number (5), expected text")
    assert skips["CXR91_IM-0091"][0] == "image outside --images_dir"
    assert skips["CXR92_IM-0092"][0] == "missing image"
    assert skips["CXR93_IM-0093"] == ("split disagrees with its key", "train #7: 'split' is 'test' under 'train'")
    assert skips["CXR94_IM-0094"][0] == "empty report" and skips["train #11"][0] == "not a JSON object"
    assert (out / "warnings.tsv").read_text().splitlines()[1:] == [
        "CXR12_IM-0012\tview CXR12_IM-0012/2.png not used (--max_views 2)"]


def test_image_unit_splits_items_into_views(iu, tmp_path):
    annotation, images = iu
    out = tmp_path / "out"
    rc, line = convert(annotation, images, out, "--unit", "image", "--max_views", "1")
    assert rc == 0 and line.startswith("read 26 = written 16 (train 7, val 2, test 7) + skipped 10 ")
    rows = by_id(out)
    assert {rid: split for rid, (split, _) in rows.items() if rid.startswith(("CXR2_", "CXR10_", "CXR12_"))} == {
        "CXR2_IM-0002_0": "train", "CXR2_IM-0002_1": "train", "CXR10_IM-0010_0": "test", "CXR10_IM-0010_1": "test",
        "CXR12_IM-0012_0": "test", "CXR12_IM-0012_1": "test", "CXR12_IM-0012_2": "test"}
    assert Path(rows["CXR2_IM-0002_0"][1]["images"][0]).name == "1.png"  # k counts in the file's order
    assert all(len(s["images"]) == 1 for _, s in rows.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "image" and summary["skipped_by_reason"]["image outside --images_dir"] == 1


def test_byte_identical_rerun_and_refusals(iu, tmp_path, capsys):
    annotation, images = iu
    first, second = tmp_path / "a", tmp_path / "b"
    convert(annotation, images, first)
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(annotation),
         "--images_dir", str(images), "--output_dir", str(second), "--lang", "en", "--quiet"],
        env={"PYTHONHASHSEED": "99"})
    names = ("train.jsonl", "val.jsonl", "test.jsonl", "skipped.tsv", "warnings.tsv", "summary.json")
    assert {n: (first / n).read_bytes() for n in names} == {n: (second / n).read_bytes() for n in names}
    capsys.readouterr()
    bad_key = tmp_path / "null_test.json"
    bad_key.write_text(json.dumps({"train": [iu_item("CXR1_IM-0001", "train")], "test": None}))
    not_r2gen = tmp_path / "other.json"
    not_r2gen.write_text(json.dumps({"images": []}))
    for extra, message in [(["--section", "findings"], "has no report sections"),
                           (["--input", str(bad_key)], "'test' is null, expected a list of items"),
                           (["--input", str(not_r2gen), "--format", "r2gen"], "not R2Gen's layout"),
                           (["--images_dir", str(tmp_path / "nope")], "images folder not found")]:
        args = {"--input": str(annotation), "--images_dir": str(images)}
        args.update(dict(zip(extra[::2], extra[1::2])))
        rc = conv.main([x for kv in args.items() for x in kv] + ["--output_dir", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], (extra, err)


def test_mimic_flavour_patient_groups_and_unknown_keys(tmp_path):
    images = tmp_path / "files"
    studies = [("p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg", "train"),
               ("p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg", "train"),
               ("p10/p10000764/s57375967/096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4.jpg", "train"),
               ("p10/p10000898/s50771383/9b314ad7-fbcb0422-6db62dfc-732858d0-a5527d8b.jpg", "train"),
               ("p10/p10000935/s50578979/d0b71acc-b5a62046-bbb5f6b8-7b173b85-65cdf738.jpg", "train"),
               ("p10/p10001038/s58224503/a8f2e4d8-a03d4a1d-6c7f3b46-0b3b37fc-86f4b7bd.jpg", "val"),
               ("p10/p10001176/s53186264/2a6c1a5c-a09ac9c0-58f9b1de-bb3a8ae2-ec7e4f2e.jpg", "test")]
    for rel, _ in studies:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(BUNDLED_IMAGES / "2_1.png").convert("L").resize((48, 48)).save(images / rel, format="JPEG")
    data: dict[str, list] = {"train": [], "val": [], "test": []}
    for rel, split in studies:
        study = rel.split("/")[2].removeprefix("s")
        data[split].append({"id": study, "report": f"FINDINGS: study {study}, no acute process.",
                            "image_path": [rel], "split": split})
    data["extra"] = [{"id": "61111111", "report": "x", "image_path": [studies[0][0]], "split": "extra"}]
    annotation = tmp_path / "mimic_annotation.json"
    annotation.write_text(json.dumps(data))
    assert r2gen_annotation.detect(annotation) and not iu_xray.detect(annotation)
    assert not r2gen_annotation.detect(ROOT / "data" / "openi" / "openi-en.json") and not r2gen_annotation.detect(tmp_path)
    assert conv.pick_reader(type("A", (), {"input": str(annotation), "format": None})).NAME == "r2gen"
    out = tmp_path / "out"
    rc, line = convert(annotation, images, out, "--split", "seeded", "--val_ratio", "0.3", "--test_ratio", "0.3")
    assert rc == 0 and line.endswith("+ skipped 1 (not in the official split 1)")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["r2gen_flavour"] == "mimic_cxr" and summary["split"] == "seeded"
    sides = {rid: split for rid, (split, _) in by_id(out).items()}
    assert sides["50414267"] == sides["53189527"], "two studies of patient p10000032 must share a split"
    assert summary["studies_per_split"] == {"train": 2, "val": 2, "test": 2}  # six patients, split by patient
