"""Converter: bundled data, both input formats, every skip reason, determinism, study split."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import BUNDLED_IMAGES, PYTHON, REPORTS, ROOT, read_jsonl, run
from medswift.data.readers import openi
from medswift.data.converters import reports as conv
from medswift.core import prompts

SHARED_SOURCE = ROOT.parent / "shared" / "data" / "openi" / "openi-zh-prompt.json"


def all_samples(out: Path) -> dict[str, list[dict]]:
    return {s: read_jsonl(out / f"{s}.jsonl") for s in ("train", "val", "test")}


def test_bundled_openi_zh(tmp_path, capsys):
    rc = conv.main(["--input", str(REPORTS["zh"]), "--images_dir", str(BUNDLED_IMAGES),
                    "--output_dir", str(tmp_path), "--lang", "zh", "--quiet"])
    assert rc == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == "read 6423 = written 8 (train 5, val 2, test 1) + skipped 6415 (missing image 6415)"
    samples = all_samples(tmp_path)
    split_of = {s["id"]: split for split, rows in samples.items() for s in rows}
    assert len(split_of) == 8
    assert split_of["2_1"] == split_of["2_2"], "two views of study 2 must share a split"
    zh_reports = {a["image_id"]: a["caption"] for a in json.loads(REPORTS["zh"].read_text())["annotations"]}
    for rows in samples.values():
        for s in rows:
            user, assistant = s["messages"][0]["content"], s["messages"][1]["content"]
            assert user.startswith("<image>") and user[len("<image>"):] in prompts.TEMPLATES["zh"]
            assert assistant == zh_reports[s["id"]]
            assert Path(s["images"][0]).is_file()
    skipped = (tmp_path / "skipped.tsv").read_text().splitlines()
    assert len(skipped) == 1 + 6415 and all("\tmissing image\t" in row for row in skipped[1:])


def test_reference_source_format_resolves_by_file_name(tmp_path):
    if SHARED_SOURCE.is_file():
        source = SHARED_SOURCE  # the reference system's own file, paths from another machine
    else:  # same layout, made here
        anns = json.loads(REPORTS["zh"].read_text())["annotations"]
        source = tmp_path / "src.json"
        source.write_text(json.dumps([{"img": f"/elsewhere/images2/{a['image_id']}.png",
                                       "prompt": "这张X光片显示什么？", "label": a["caption"]} for a in anns],
                                     ensure_ascii=False))
    out = tmp_path / "out"
    assert conv.main(["--source_json", str(source), "--images_dir", str(BUNDLED_IMAGES),
                      "--output_dir", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 6423 and summary["written"] == 8
    assert summary["read"] == summary["written"] + summary["skipped"]
    # --keep_source_prompt keeps the record's own question instead of the templates
    out2 = tmp_path / "out2"
    assert conv.main(["--source_json", str(source), "--images_dir", str(BUNDLED_IMAGES),
                      "--output_dir", str(out2), "--keep_source_prompt", "--quiet"]) == 0
    source_prompts = {r["prompt"] for r in json.loads(source.read_text())}
    for rows in all_samples(out2).values():
        for s in rows:
            assert s["messages"][0]["content"][len("<image>"):] in source_prompts


@pytest.fixture()
def bad_inputs(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """One record per case: good, and each way an input can be broken or unusual."""
    img = tmp_path / "images"
    img.mkdir()
    base = np.asarray(Image.open(BUNDLED_IMAGES / "2_1.png").convert("L"))
    Image.fromarray(base).save(img / "10_1.png")  # good 8-bit grayscale
    Image.open(BUNDLED_IMAGES / "2_2.png").save(img / "10_2.png")  # good RGB, same study
    (img / "11_1.png").write_bytes(b"")  # zero bytes
    whole = (BUNDLED_IMAGES / "348_2.png").read_bytes()
    (img / "12_1.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (img / "13_1.png").write_text("this is a report, not a picture")  # not an image
    # A 16-bit X-ray as detectors write it: 12 bits used, values far above 255.
    sixteen = (base.astype(np.uint16) * 16 + 40).astype(np.uint16)
    Image.fromarray(sixteen).save(img / "14_1.png")
    assert Image.open(img / "14_1.png").mode.startswith("I")
    Image.fromarray(base).convert("P").save(img / "15_1.png")  # palette
    rgba = Image.fromarray(base).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(img / "16_1.png")  # RGBA
    Image.fromarray(base).convert("CMYK").save(img / "17_1.jpg")  # CMYK JPEG
    (img / "19_1.png").write_bytes((img / "10_1.png").read_bytes())  # good, but empty report
    anns = [{"image_id": i, "caption": f"Report for {i}. Heart size normal."} for i in
            ["10_1", "10_2", "11_1", "12_1", "13_1", "14_1", "15_1", "16_1", "17_1", "18_1"]]
    anns.append({"image_id": "19_1", "caption": "   "})
    anns.append({"image_id": "10_1", "caption": "duplicate"})
    reports = tmp_path / "reports.json"
    reports.write_text(json.dumps({"annotations": anns}))
    return reports, img, base


def test_every_skip_reason_is_listed_and_counted(bad_inputs, tmp_path, capsys):
    reports, img, base = bad_inputs
    out = tmp_path / "out"
    rc = conv.main(["--input", str(reports), "--images_dir", str(img), "--output_dir", str(out),
                    "--lang", "en", "--quiet", "--val_ratio", "0", "--test_ratio", "0"])
    assert rc == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == ("read 12 = written 6 (train 6, val 0, test 0) + skipped 6 (duplicate id 1, empty file 1, "
                    "empty report 1, missing image 1, not an image 1, truncated image 1)")
    rows = [r.split("\t") for r in (out / "skipped.tsv").read_text().splitlines()[1:]]
    assert {(r[0], r[1]) for r in rows} == {("10_1", "duplicate id"), ("11_1", "empty file"), ("19_1", "empty report"),
                                            ("18_1", "missing image"), ("13_1", "not an image"),
                                            ("12_1", "truncated image")}
    written = {s["id"]: s for s in read_jsonl(out / "train.jsonl")}
    assert set(written) == {"10_1", "10_2", "14_1", "15_1", "16_1", "17_1"}
    # Plain 8-bit files are used in place; the others get an 8-bit copy in images/.
    assert written["10_1"]["images"][0] == str((img / "10_1.png").resolve())
    for rid in ("14_1", "15_1", "16_1", "17_1"):
        path = Path(written[rid]["images"][0])
        assert path.parent == (out / "images").resolve()
        im = Image.open(path)
        assert im.mode in ("L", "RGB")
        arr = np.asarray(im.convert("L"), dtype=np.float64)
        # not a white (or black) square: the anatomy keeps its contrast and shape
        assert 30 < arr.mean() < 220 and arr.std() > 20, (rid, arr.mean(), arr.std())
        assert np.corrcoef(arr.ravel(), base.ravel())[0, 1] > 0.97, rid
    # what the model would see from the 16-bit file without normalising: not the X-ray
    naive = np.asarray(Image.open(img / "14_1.png").convert("L"), dtype=np.float64)
    assert np.corrcoef(naive.ravel(), base.ravel())[0, 1] < 0.9


def test_strict_and_nothing_written(bad_inputs, tmp_path, capsys):
    reports, img, _ = bad_inputs
    assert conv.main(["--input", str(reports), "--images_dir", str(img), "--output_dir", str(tmp_path / "a"),
                      "--quiet", "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err
    empty = tmp_path / "empty_images"
    empty.mkdir()
    assert conv.main(["--input", str(reports), "--images_dir", str(empty), "--output_dir", str(tmp_path / "b"),
                      "--quiet"]) == 1
    assert "no record was written" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--input", "/nonexistent/reports.json", "--images_dir", "."], "input file not found"),
    (["--input", "{reports}", "--images_dir", "/nonexistent/images"], "images folder not found"),
    (["--input", "{bad_json}", "--images_dir", "."], "is not valid JSON"),
    (["--input", "{wrong_layout}", "--images_dir", "."], "unknown layout"),
    (["--input", "{reports}", "--images_dir", ".", "--val_ratio", "1.5"], "--val_ratio must be in [0, 1)"),
])
def test_user_mistakes_give_one_line(tmp_path, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"images": []}))
    args = [a.format(reports=REPORTS["en"], bad_json=tmp_path / "bad.json", wrong_layout=tmp_path / "wrong.json")
            for a in args]
    proc = run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), *args, "--output_dir", str(tmp_path / "o")],
               check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def make_many_studies(tmp_path: Path, n_studies: int = 60) -> tuple[Path, Path]:
    img = tmp_path / "many"
    img.mkdir()
    small = Image.open(BUNDLED_IMAGES / "2_1.png").convert("L").resize((64, 64))
    anns = []
    for study in range(n_studies):
        for view in range(1, 2 + study % 3):  # 1 to 3 views per study
            rid = f"{1000 + study}_{view}"
            small.save(img / f"{rid}.png")
            anns.append({"image_id": rid, "caption": f"Study {study} view {view}: lungs clear."})
    reports = tmp_path / "many.json"
    reports.write_text(json.dumps({"annotations": anns}))
    return reports, img


def test_no_study_on_two_sides_and_byte_identical(tmp_path):
    reports, img = make_many_studies(tmp_path)
    out = tmp_path / "out"
    common = ["--input", str(reports), "--images_dir", str(img), "--output_dir", str(out), "--quiet",
              "--val_ratio", "0.1", "--test_ratio", "0.2", "--lang", "en"]
    assert conv.main(common + ["--workers", "2"]) == 0
    first = {name: (out / name).read_bytes() for name in ("train.jsonl", "val.jsonl", "test.jsonl",
                                                          "skipped.tsv", "warnings.tsv", "summary.json")}
    samples = all_samples(out)
    sides: dict[str, set[str]] = {}
    for split, rows in samples.items():
        for s in rows:
            sides.setdefault(openi.study_of(s["id"]), set()).add(split)
    assert len(sides) == 60 and all(len(v) == 1 for v in sides.values())
    assert [sum(1 for v in sides.values() if split in v) for split in ("train", "val", "test")] == [42, 6, 12]
    # same inputs and seed, serial this time and in another process with another hash seed
    # (set and dict order must not leak into the outputs): byte-identical outputs
    shutil.rmtree(out)
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), *common, "--workers", "1"],
        env={"PYTHONHASHSEED": "12345"})
    assert {name: (out / name).read_bytes() for name in first} == first
    # templates: deterministic per record, several of the twelve in use
    used = {s["messages"][0]["content"] for rows in samples.values() for s in rows}
    assert len(used) >= 8
    # another seed moves studies between splits
    out3 = tmp_path / "out3"
    assert conv.main(common + ["--output_dir", str(out3), "--seed", "7"]) == 0
    assert (out3 / "test.jsonl").read_bytes() != first["test.jsonl"]


def test_system_prompt_and_templates():
    assert all(len(prompts.TEMPLATES[lang]) == 12 for lang in prompts.LANGUAGES)
    assert len(set(prompts.TEMPLATES["zh"])) == 12 and len(set(prompts.TEMPLATES["en"])) == 12
    # a hash of id and seed, not Python's salted hash(): pinned values hold in any process
    assert (prompts.pick_index("2_1", 42, "en"), prompts.pick_index("2_1", 7, "en"),
            prompts.pick_index("2_1", 42, "zh")) == (8, 11, 0)
    assert len({prompts.pick_index(f"{i}_1", 42, "en") for i in range(600)}) == 12, "every template is used"
    with pytest.raises(ValueError, match="template id must be 0..11"):
        prompts.template("en", 12)
    with pytest.raises(ValueError, match="unknown language"):
        prompts.template("fr", 0)
    # study samples: the same request, speaking of the views shown, in both languages
    assert prompts.study_template("en", 0, 2, ["PA", "LATERAL"]) == \
        "Write a radiology report for these frontal and lateral chest radiographs, with findings and impression."
    assert prompts.study_template("zh", 0, 2, ["AP", "LL"]) == "请根据这两张胸部X光片（正位和侧位）写出影像学报告，包括所见和印象。"
    assert prompts.views_phrase("en", 2, ["PA", "AP"]) == "two frontal chest radiographs"
    assert prompts.views_phrase("en", 3, ["PA", None, "LATERAL"]) == "three chest radiographs"
    assert prompts.views_phrase("zh", 2) == "两张胸部X光片"
    assert prompts.study_template("en", 4, 1) == prompts.template("en", 4)
    assert all("this" not in prompts.study_template("en", k, 2) for k in range(12))
    assert all("这张" not in prompts.study_template("zh", k, 2) for k in range(12))
    from medswift.data.pipeline.output_files import sample

    row = sample("2_1", ["/x/2_1.png"], "Describe.", "Normal chest.", "You are a radiology assistant.")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"] == "<image>Describe." and row["images"] == ["/x/2_1.png"]
    two = sample("2", ["/x/2_1.png", "/x/2_2.png"], "Describe.", "Normal chest.")
    assert two["messages"][0]["content"] == "<image><image>Describe.", "one tag per view"
    assert openi.study_of("1234_2") == "1234" and openi.study_of("CXR7") == "CXR7"


def test_dicom_images_convert_to_8bit_copies(tmp_path):
    from pydicom.data import get_testdata_file

    img = tmp_path / "dicom"
    img.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), img / "30_1.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), img / "31_1.dcm")
    reports = tmp_path / "r.json"
    reports.write_text(json.dumps({"annotations": [{"image_id": "30_1", "caption": "CT slice."},
                                                   {"image_id": "31_1", "caption": "Truncated."}]}))
    out = tmp_path / "out"
    assert conv.main(["--input", str(reports), "--images_dir", str(img), "--output_dir", str(out), "--quiet",
                      "--val_ratio", "0", "--test_ratio", "0"]) == 0
    (sample,) = read_jsonl(out / "train.jsonl")
    copy = Path(sample["images"][0])
    assert copy.suffix == ".png" and Image.open(copy).mode == "L" and Image.open(copy).size == (128, 128)
    assert "31_1\ttruncated DICOM" in (out / "skipped.tsv").read_text()


def test_converter_names_the_training_line_and_the_launcher_remembers_it(tmp_path):
    """The reference's order (convert into some folder, then run the launcher) works: the converter
    prints the exact line, and a launcher that finds no data names the last conversion."""
    state, out = tmp_path / "state", tmp_path / "my data"
    env = {"MEDSWIFT_STATE_DIR": str(state)}
    proc = run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(REPORTS["en"]),
                "--images_dir", str(BUNDLED_IMAGES), "--output_dir", str(out), "--lang", "en"], env=env, cwd=tmp_path)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("train on it: "))
    assert line == f"train on it: DATA_DIR='my data' bash {ROOT / 'tools' / 'swift' / 'finetune_qwen3vl_lora.sh'}"
    dry = run(["bash", "-c", line.split(": ", 1)[1]], env={**env, "DRY_RUN": "1"}, cwd=tmp_path)
    assert "--dataset my\\ data/train.jsonl" in dry.stdout, "the printed line trains on it (from where it was printed)"
    missing = run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh")],
                  env={**env, "DATA_DIR": str(tmp_path / "elsewhere")}, check=False)
    (error,) = missing.stderr.splitlines()
    assert missing.returncode == 2 and error.startswith("error: training data not found")
    assert "the last conversion" in error and f"wrote {out}: DATA_DIR='{out}' bash " in error


def test_every_registered_reader_keeps_the_reader_contract():
    """medswift.data.readers.contract: each reader declares its name, whether --views applies, its own
    flags and the typed options they fill; the converter knows no reader's flags itself."""
    import argparse
    import dataclasses

    from medswift.data.readers.contract import ReaderOptions

    common = {a.dest for a in argparse.ArgumentParser()._actions}  # just --help
    converter_flags = {a.dest for a in conv.build_parser()._actions}
    for name, reader in conv.READERS.items():
        assert reader.NAME == name and isinstance(reader.VIEWS, bool)
        assert issubclass(reader.Options, ReaderOptions) and dataclasses.is_dataclass(reader.Options)
        own = argparse.ArgumentParser()
        reader.add_args(own)
        flags = {a.dest for a in own._actions} - common
        extra = {f.name for f in dataclasses.fields(reader.Options)} - {"input", "images_dir", "unit", "priors",
                                                                         "context"}  # the converter's own
        assert flags == extra, f"{name}: its flags fill its options"
        assert flags <= converter_flags, f"{name}: the converter offers its flags"
        assert all(h.startswith(f"{name}: ") for a in own._actions if a.dest in flags for h in [a.help])
        options = reader.Options.from_args(argparse.Namespace(input="x", images_dir=None, unit=None, views="PA"))
        assert options.input == "x" and getattr(options, "views", "PA") == "PA"
    assert [n for n, r in conv.READERS.items() if r.VIEWS] == ["mimic_cxr"]
