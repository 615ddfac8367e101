"""The sibling jobs: ChestX-ray14, HAM10000 and caption converters, answer parsing, class
weights, and a real seq_cls run on the tiny model through prediction to the report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, dry, make_cxr14, read_jsonl, run
from medswift.core import labels as cls
from medswift.data.converters import captions as convert_captions
from medswift.data.pipeline import classification_outputs
from medswift.data.converters import chestxray14 as convert_chestxray14
from medswift.data.converters import ham10000 as convert_ham10000


def sides_of(out: Path, group_of) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for row in read_jsonl(out / f"{split}.jsonl"):
            sides.setdefault(group_of(row["id"]), set()).add(split)
    return sides


# --------------------------------------------------------------------------- answers
def test_answers_round_trip_in_both_languages():
    for lang in ("en", "zh"):
        for labels in (["Effusion", "Atelectasis"], ["No Finding"], ["Pleural_Thickening", "Hernia"]):
            text = cls.format_answer(cls.CHESTXRAY14, labels, lang)
            assert cls.parse_answer(cls.CHESTXRAY14, text) == [lab for lab in cls.CHESTXRAY14.labels if lab in labels]
        for code in cls.HAM10000.labels:
            assert cls.parse_answer(cls.HAM10000, cls.format_answer(cls.HAM10000, [code], lang)) == [code]
    assert cls.format_answer(cls.CHESTXRAY14, ["Effusion", "Atelectasis"], "en") == "Findings: Atelectasis, Effusion."
    assert cls.format_answer(cls.HAM10000, ["mel"], "zh") == "诊断：黑色素瘤（mel）。"
    assert cls.parse_answer(cls.HAM10000, "Diagnosis: melanocytic nevus (nv).") == ["nv"], "mel is not in melanocytic"
    assert cls.parse_answer(cls.HAM10000, "Either melanoma or a melanocytic nevus") is None, "two classes: unparseable"
    assert cls.parse_answer(cls.CHESTXRAY14, "I cannot tell.") is None
    assert cls.parse_answer(cls.CHESTXRAY14, "<think>effusion?</think>No Finding") == ["No Finding"]


def test_positive_class_weights_by_hand():
    # 4 training images: Effusion in 1 (3 negatives / 1 positive = 3.0), Hernia in none (1.0), No Finding in 3 (1/3)
    w = classification_outputs.pos_weights(cls.CHESTXRAY14, [["Effusion"], ["No Finding"], ["No Finding"], ["No Finding"]])
    labels = list(cls.CHESTXRAY14.labels)
    assert w[labels.index("Effusion")] == 3.0 and w[labels.index("Hernia")] == 1.0
    assert w[labels.index("No Finding")] == pytest.approx(1 / 3, abs=1e-4)


# --------------------------------------------------------------------------- converters
def test_chestxray14_patient_split_and_outputs(tmp_path, capsys):
    data = make_cxr14(tmp_path / "src")
    out = tmp_path / "out"
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(out), "--quiet"]) == 0
    n = len(data["rows"])
    assert capsys.readouterr().out.startswith(f"read {n + 3} = written {n} (")
    assert json.loads((out / "summary.json").read_text())["skipped_by_reason"] == \
        {"empty label field": 1, "missing image": 1, "unknown label": 1}
    sides = sides_of(out, lambda rid: rid.split("_")[0])
    assert all(len(v) == 1 for v in sides.values()), "no patient on two sides"
    meta = json.loads((out / "labels.json").read_text())
    assert meta["num_labels"] == 15 and meta["labels"][-1] == "No Finding" and len(meta["pos_weight"]) == 15
    truth = {r[0]: r[1].split("|") for r in data["rows"]}
    for split in ("train", "val", "test"):
        for gen, head in zip(read_jsonl(out / f"{split}.jsonl"), read_jsonl(out / f"cls_{split}.jsonl")):
            assert gen["id"] == head["id"] and head["label"] == cls.multi_hot(cls.CHESTXRAY14, truth[gen["id"]])
            assert cls.parse_answer(cls.CHESTXRAY14, gen["messages"][-1]["content"]) == \
                [lab for lab in cls.CHESTXRAY14.labels if lab in truth[gen["id"]]]
            assert [m["role"] for m in head["messages"]] == ["user"]


def test_chestxray14_official_lists(tmp_path):
    data = make_cxr14(tmp_path / "src")
    names = [r[0] for r in data["rows"]]
    test_names = [n for n in names if n.startswith(("00000001", "00000002"))]
    (tmp_path / "test_list.txt").write_text("\n".join(test_names) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in names[:-1] if n not in test_names) + "\n")
    out = tmp_path / "out"
    assert convert_chestxray14.main(["--csv", str(data["csv"]), "--images_dir", str(data["images"]),
                                     "--output_dir", str(out), "--quiet", "--lang", "zh",
                                     "--train_val_list", str(tmp_path / "train_val_list.txt"),
                                     "--test_list", str(tmp_path / "test_list.txt")]) == 0
    assert sorted(r["id"] for r in read_jsonl(out / "test.jsonl")) == sorted(test_names)
    summary = json.loads((out / "summary.json").read_text())
    # the last good row, left out of both lists, and the bad row whose image is missing (in no list either)
    assert summary["skipped_by_reason"]["not in the official lists"] == 2 and summary["split"] == "official lists"
    assert read_jsonl(out / "train.jsonl")[0]["messages"][-1]["content"].startswith("所见：")


# the JSON form, as its known writer makes it from Data_Entry_2017.csv: lower-case names with spaces,
# the 0/1 list in alphabetical order with "no finding" among them (not NIH's order)
JSON_ORDER = sorted(cls.CHESTXRAY14.labels, key=lambda lab: lab.lower().replace("_", " "))


def cxr14_json_record(i: int, image: str, findings: list[str], order=JSON_ORDER, spell=str.lower) -> dict:
    return {"id": f"identity_{i + 1}", "image_path": f"sample/images/{image}",
            "disease_labels": [int(lab in findings) for lab in order],
            "disease_names": [spell(lab.replace("_", " ")) for lab in findings]}


def test_chestxray14_json_form(tmp_path):
    data = make_cxr14(tmp_path / "src")
    truth = {r[0]: r[1].split("|") for r in data["rows"]}
    records = [cxr14_json_record(i, name, labels) for i, (name, labels) in enumerate(truth.items())]
    records[3] = cxr14_json_record(3, *list(truth.items())[3], spell=lambda s: s.replace(" ", "_").title())
    extra_images = ["00000050_000.png", "00000051_000.png", "00000052_000.png", "00000053_000.png", "scan_a.png"]
    for name in extra_images:
        Image.open(BUNDLED_IMAGES / "2_1.png").convert("L").resize((32, 32)).save(data["images"] / name)
    truth["scan_a.png"] = ["Mass"]
    disagree = cxr14_json_record(0, "00000050_000.png", ["Effusion"])
    disagree["disease_names"] = ["mass"]
    bad = [(disagree, "labels and names disagree"),
           (dict(cxr14_json_record(0, "00000051_000.png", []), disease_names=["alien disease"]), "unknown label"),
           (dict(cxr14_json_record(0, "00000052_000.png", ["Mass"]), disease_labels="0,1"), "wrong field type"),
           (dict(cxr14_json_record(0, "00000053_000.png", ["Mass"]), disease_labels=[0] * 13), "wrong label count"),
           (cxr14_json_record(0, "99999999_000.png", ["Mass"]), "missing image"),
           (cxr14_json_record(0, "00000050_000.png", ["No Finding", "Mass"]), "No Finding together with findings"),
           ("identity_99", "not a JSON object"),
           ({"id": "identity_98", "disease_labels": [0] * 15}, "no image path")]
    records += [cxr14_json_record(len(records), "scan_a.png", ["Mass"])] + [rec for rec, _ in bad]
    cut = len(records) * 4 // 5  # the writer's train/val files; val as JSON lines here
    (tmp_path / "train.json").write_text(json.dumps(records[:cut], indent=2))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[cut:]))
    outs = [tmp_path / "out", tmp_path / "again"]
    for out in outs:
        assert convert_chestxray14.main(["--json", str(tmp_path / "train.json"), "--json", str(tmp_path / "val.jsonl"),
                                         "--images_dir", str(data["images"]), "--output_dir", str(out), "--quiet"]) == 0
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["read"] == len(records) and summary["written"] == len(truth)
    assert summary["read"] == summary["written"] + summary["skipped"]
    assert summary["skipped_by_reason"] == {reason: sum(1 for _, r in bad if r == reason) for _, reason in bad}
    assert summary["label_order"] == "alphabetical" and summary["input_form"] == "json"
    # no Patient ID in this form: grouped by the NIH name's patient prefix (the missing image's too), else the image
    assert summary["grouped_by"] == {"patient prefix of the image name": len(data["rows"]) + 1, "the image itself": 1}
    for split in ("train", "val", "test"):
        for head in read_jsonl(outs[0] / f"cls_{split}.jsonl"):
            assert head["label"] == cls.multi_hot(cls.CHESTXRAY14, truth[head["id"]])
    sides = sides_of(outs[0], lambda rid: rid.split("_")[0])
    assert all(len(v) == 1 for v in sides.values()), "no patient on two sides"
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "cls_train.jsonl", "labels.json", "skipped.tsv",
                 "summary.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_chestxray14_json_in_nih_order_through_csv_flag(tmp_path, capsys):
    data = make_cxr14(tmp_path / "src", n_patients=4, size=16)
    nih14 = cls.CHESTXRAY14.labels[:14]  # 14 long: all zeros is No Finding
    records = [cxr14_json_record(i, row[0], [lab for lab in row[1].split("|") if lab != "No Finding"], order=nih14,
                                 spell=str.title) for i, row in enumerate(data["rows"])]
    src = tmp_path / "nih.json"
    src.write_text(json.dumps(records))
    common = ["--csv", str(src), "--images_dir", str(data["images"]), "--quiet"]
    assert convert_chestxray14.main(common + ["--output_dir", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["label_order"] == "nih" and summary["written"] == len(records) and summary["skipped"] == 0
    truth = {r[0]: r[1].split("|") for r in data["rows"]}
    for head in read_jsonl(tmp_path / "out" / "cls_train.jsonl"):
        assert head["label"] == cls.multi_hot(cls.CHESTXRAY14, truth[head["id"]])
    # the order forced the wrong way: every record whose names then disagree is a listed skip
    assert convert_chestxray14.main(common + ["--output_dir", str(tmp_path / "forced"),
                                              "--label_order", "alphabetical"]) == 0
    forced = json.loads((tmp_path / "forced" / "summary.json").read_text())
    assert forced["skipped_by_reason"]["labels and names disagree"] >= len(records) // 2
    # labels alone cannot say their order
    src.write_text(json.dumps([{k: v for k, v in r.items() if k != "disease_names"} for r in records]))
    capsys.readouterr()
    assert convert_chestxray14.main(common + ["--output_dir", str(tmp_path / "o3")]) == 2
    assert "give --label_order" in capsys.readouterr().err


def test_ham10000_split_by_lesion(tmp_path):
    images = [tmp_path / "HAM10000_images_part_1", tmp_path / "HAM10000_images_part_2"]
    for d in images:
        d.mkdir()
    src = sorted(BUNDLED_IMAGES.glob("*.png"))
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for k in range(30):
        lesion = f"HAM_{k // 2:07d}"  # two images per lesion
        image_id = f"ISIC_{k:07d}"
        Image.open(src[k % len(src)]).convert("RGB").resize((64, 64)).save(images[k % 2] / f"{image_id}.jpg")
        lines.append(f"{lesion},{image_id},{cls.HAM10000.labels[k % 7]},histo,50.0,male,back")
    lines += ["HAM_9000001,ISIC_9000001,xyz,histo,50,male,back", "HAM_9000002,ISIC_0000001,,histo,50,male,back",
              "HAM_9000003,ISIC_9999999,nv,histo,50,male,back"]
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    Image.open(src[0]).convert("RGB").resize((64, 64)).save(images[0] / "ISIC_9000001.jpg")
    out = tmp_path / "out"
    assert convert_ham10000.main(["--csv", str(tmp_path / "HAM10000_metadata.csv"), "--images_dir", str(images[0]),
                                  "--images_dir", str(images[1]), "--output_dir", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 30
    assert summary["skipped_by_reason"] == {"duplicate id": 1, "missing image": 1, "unknown label": 1}
    lesion_of = {f"ISIC_{k:07d}": f"HAM_{k // 2:07d}" for k in range(30)}
    assert all(len(v) == 1 for v in sides_of(out, lesion_of.get).values()), "no lesion on two sides"
    row = read_jsonl(out / "cls_train.jsonl")[0]
    assert isinstance(row["label"], int) and 0 <= row["label"] < 7
    assert json.loads((out / "labels.json").read_text())["problem_type"] == cls.SINGLE


def test_captions_several_rows_per_image_are_records_of_one_group(tmp_path):
    """VQA style: three questions on one image are three records (the image's id, then __2, __3),
    all in one split; no "duplicate id"."""
    imgs = tmp_path / "vqa"
    imgs.mkdir()
    src = sorted(BUNDLED_IMAGES.glob("*.png"))
    rows = []
    for k in range(6):
        Image.open(src[k % len(src)]).convert("L").resize((48, 48)).save(imgs / f"img{k}.png")
        rows += [{"image": f"img{k}.png", "caption": f"Answer {n} about image {k}."} for n in range(3)]
    (imgs / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert convert_captions.main(["--input", str(imgs / "vqa.jsonl"), "--output_dir", str(out), "--quiet",
                                  "--val_ratio", "0.3", "--test_ratio", "0.3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["read"], summary["written"], summary["skipped"]) == (18, 18, 0)
    assert sum(summary["groups_per_split"].values()) == 6
    sides = sides_of(out, lambda rid: rid.split("__")[0])
    assert len(sides) == 6 and all(len(v) == 1 for v in sides.values())
    ids = {r["id"]: r for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")}
    assert ids["img2__3"]["messages"][-1]["content"] == "Answer 2 about image 2."
    assert ids["img2"]["messages"][-1]["content"] == "Answer 0 about image 2."


def test_captions_from_jsonl_csv_folder_and_hf(tmp_path):
    imgs = tmp_path / "ct"
    (imgs / "p1").mkdir(parents=True)
    src = sorted(BUNDLED_IMAGES.glob("*.png"))
    rows = []
    for k in range(9):
        name = f"p1/slice_{k}.png" if k < 3 else f"slice_{k}.png"
        Image.open(src[k % len(src)]).convert("L").resize((64, 64)).save(imgs / name)
        rows.append({"image": name, "caption": f"Axial CT slice {k}.", "patient": "p1" if k < 3 else f"p{k}"})
    rows.append({"image": "missing.png", "caption": "gone", "patient": "p9"})
    rows.append({"image": "slice_4.png", "caption": " ", "patient": "p4"})
    (imgs / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out_jsonl"
    assert convert_captions.main(["--input", str(imgs / "captions.jsonl"), "--output_dir", str(out),
                                  "--group_key", "patient", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # the second row on slice_4 is its own record (slice_4__2), skipped for its empty caption
    assert summary["written"] == 9 and summary["skipped_by_reason"] == {"empty caption": 1, "missing image": 1}
    assert all(len(v) == 1 for v in sides_of(out, lambda rid: "p1" if rid.startswith("p1") else rid).values())
    # CSV with the same columns
    csv_path = imgs / "captions.csv"
    csv_path.write_text("image,caption\n" + "".join(f"{r['image']},{r['caption']}\n" for r in rows[:9]))
    assert convert_captions.main(["--input", str(csv_path), "--output_dir", str(tmp_path / "out_csv"),
                                  "--quiet"]) == 0
    # a folder of images with .txt captions beside them
    folder = tmp_path / "folder"
    folder.mkdir()
    for k in range(3):
        shutil.copy(imgs / f"slice_{k + 3}.png", folder / f"s{k}.png")
        (folder / f"s{k}.txt").write_text(f"caption {k}")
    assert convert_captions.main(["--input", str(folder), "--output_dir", str(tmp_path / "out_dir"),
                                  "--quiet", "--val_ratio", "0", "--test_ratio", "0"]) == 0
    assert [r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "out_dir" / "train.jsonl")] == \
        ["caption 0", "caption 1", "caption 2"]
    # a Hugging Face dataset saved with save_to_disk, images decoded
    from datasets import Dataset, Features, Image as HFImage, Value

    ds = Dataset.from_dict({"image": [str(imgs / f"slice_{k}.png") for k in range(3, 8)],
                            "caption": [f"hf caption {k}" for k in range(5)]},
                           features=Features({"image": HFImage(), "caption": Value("string")}))
    ds.save_to_disk(str(tmp_path / "hf"))
    assert convert_captions.main(["--input", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "out_hf"),
                                  "--quiet"]) == 0
    assert json.loads((tmp_path / "out_hf" / "summary.json").read_text())["written"] == 5


@pytest.mark.parametrize("script, args, message", [
    ("convert_chestxray14.py", ["--csv", "/nonexistent.csv", "--images_dir", "."], "metadata CSV not found"),
    ("convert_ham10000.py", ["--csv", "{bad_csv}", "--images_dir", "."], "lacks column(s) lesion_id"),
    ("convert_captions.py", ["--input", "/nonexistent.jsonl"], "input not found"),
])
def test_converter_mistakes_one_line(tmp_path, script, args, message):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    args = [a.format(bad_csv=tmp_path / "bad.csv") for a in args]
    proc = run([PYTHON, str(ROOT / "scripts" / script), *args, "--output_dir", str(tmp_path / "o")], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr


# --------------------------------------------------------------------------- launcher and a real run
def test_cls_launcher_dry_run(tiny_model, cxr14_converted, tmp_path):
    assigns, argv = dry("finetune_qwen3vl_cls.sh", {"MODEL": str(tiny_model), "DATA_DIR": str(cxr14_converted)})
    assert assigns["MEDSWIFT_LABELS_FILE"] == f"{cxr14_converted}/labels.json"
    i = argv.index("--task_type")
    assert argv[i:i + 6] == ["--task_type", "seq_cls", "--problem_type", "multi_label_classification",
                             "--num_labels", "15"]
    assert argv[argv.index("--loss_type") + 1] == "medswift_weighted_bce"
    assert argv[argv.index("--dataset") + 1] == f"{cxr14_converted}/cls_train.jsonl"
    ham = tmp_path / "ham"
    ham.mkdir()
    (ham / "labels.json").write_text(json.dumps({"task": "ham10000", "problem_type": cls.SINGLE,
                                                 "labels": list(cls.HAM10000.labels)}))
    for split in ("train", "val"):
        shutil.copy(cxr14_converted / f"cls_{split}.jsonl", ham / f"cls_{split}.jsonl")
    _, argv = dry("finetune_qwen3vl_cls.sh", {"MODEL": str(tiny_model), "DATA_DIR": str(ham)})
    assert "single_label_classification" in argv and "--loss_type" not in argv and argv[argv.index("--num_labels") + 1] == "7"


def test_seq_cls_train_predict_evaluate(tiny_model, cxr14_converted, tmp_path):
    out = tmp_path / "run"
    run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_cls.sh"), "--max_steps", "3"],
        env={"CUDA_VISIBLE_DEVICES": "", "MODEL": str(tiny_model), "DATA_DIR": str(cxr14_converted),
             "OUTPUT_DIR": str(out), "IMAGE_MAX_TOKEN_NUM": "64", "GLOBAL_BATCH": "4", "EVAL_STEPS": "3"},
        timeout=900)
    (ckpt,) = sorted(out.glob("v*/checkpoint-*"))
    args = json.loads((ckpt / "args.json").read_text())
    assert args["task_type"] == "seq_cls" and args["num_labels"] == 15 and args["loss_type"] == "medswift_weighted_bce"
    assert "score" in json.loads((ckpt / "adapter_config.json").read_text())["modules_to_save"]
    preds = {}
    for split in ("val", "test"):
        preds[split] = tmp_path / f"pred_{split}.jsonl"
        run([PYTHON, str(ROOT / "scripts" / "predict_classification.py"), "--labels",
             str(cxr14_converted / "labels.json"), "--dataset", str(cxr14_converted / f"cls_{split}.jsonl"),
             "--adapter_path", str(ckpt), "--image_max_token_num", "64", "--output_file", str(preds[split]),
             "--quiet"], env={"CUDA_VISIBLE_DEVICES": ""})
        rows = read_jsonl(preds[split])
        assert len(rows) == len(read_jsonl(cxr14_converted / f"cls_{split}.jsonl"))
        assert all(len(r["scores"]) == 15 and all(0 <= p <= 1 for p in r["scores"]) for r in rows)
    report_dir = tmp_path / "eval"
    proc = run([PYTHON, str(ROOT / "scripts" / "evaluate_classification.py"), "--labels",
                str(cxr14_converted / "labels.json"), "--predictions", str(preds["test"]),
                "--val_predictions", str(preds["val"]), "--output_dir", str(report_dir)])
    assert "not for diagnosis" in proc.stdout
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["n"] == len(read_jsonl(preds["test"])) and metrics["problem_type"] == "multi_label_classification"
    assert list(metrics["results"]) == ["threshold 0.5", "tuned thresholds"] and metrics["primary"] == "tuned thresholds"
    labels = json.loads((cxr14_converted / "labels.json").read_text())["labels"]
    assert set(metrics["thresholds"]["per_class"]) == set(labels)
    auc = metrics["auroc"]["per_class"]
    assert set(auc) == set(labels) and all(v is None or 0 <= v <= 1 for v in auc.values())
    assert auc["No Finding"] is not None, "No Finding occurs and is absent in the test split: its AUROC exists"
    for png in ("confusion.png", "roc.png", "per_class_f1.png"):
        assert (report_dir / png).read_bytes()[:4] == b"\x89PNG"
    assert "not for diagnosis" in (report_dir / "report.md").read_text()


def test_generative_answers_that_name_no_label_are_listed(tiny_model, cxr14_converted, tmp_path):
    pred = tmp_path / "gen.jsonl"
    proc = run([PYTHON, str(ROOT / "scripts" / "predict_classification.py"), "--labels",
                str(cxr14_converted / "labels.json"), "--dataset", str(cxr14_converted / "test.jsonl"),
                "--mode", "generative", "--max_new_tokens", "2", "--image_max_token_num", "64",
                "--output_file", str(pred), "--quiet"], env={"CUDA_VISIBLE_DEVICES": ""})
    rows = read_jsonl(pred)
    n = len(rows)
    assert f"{n} predictions (generative), {n} unparseable answers" in proc.stdout, \
        "two tokens (the default writes 'Findings:' first) cannot name a label: nothing parses"
    report = tmp_path / "eval"
    run([PYTHON, str(ROOT / "scripts" / "evaluate_classification.py"), "--labels",
         str(cxr14_converted / "labels.json"), "--predictions", str(pred), "--output_dir", str(report)])
    text = (report / "report.md").read_text()
    assert all(r["id"] in text for r in rows), "every unparseable answer is listed"
