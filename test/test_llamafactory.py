"""The LLaMA-Factory reader: sharegpt (from/value and role/content), alpaca, JSON list and JSONL,
dataset_info.json columns and tags, every skip reason, byte-identical re-runs. No model loading."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, read_jsonl, run
from medswift.data.readers import llamafactory as lf
from medswift.data.converters import reports as conv

OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "skipped.tsv", "warnings.tsv", "summary.json")


def make_images(folder: Path, names: list[str]) -> None:
    """Small grayscale PNGs cut from the bundled X-rays (no two alike, so none is a duplicate file)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(BUNDLED_IMAGES.glob("*.png"))
    for k, name in enumerate(names):
        src = Image.open(sources[k % len(sources)]).convert("L")
        src.crop((k, k, 200 + k, 200 + k)).resize((48, 48)).save(folder / name)


def turn(role: str, text: str, role_tag="from", content_tag="value") -> dict:
    return {role_tag: role, content_tag: text}


def convert(src: Path, out: Path, *extra: str) -> int:
    return conv.main(["--input", str(src), "--output_dir", str(out), "--quiet", "--lang", "en", *extra])


def written(out: Path) -> dict[str, dict]:
    return {r["id"]: r for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")}


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def one_error(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


# --------------------------------------------------------------------------- sharegpt, every skip
def sharegpt_set(root: Path) -> tuple[Path, int]:
    """A sharegpt JSON list as LLaMA-Factory's data/README.md shows it (``conversations`` of
    ``from``/``value`` turns, ``images`` relative to the file's folder), with one bad record of
    each kind. Returns the file and how many records are good."""
    good = [f"cxr{k:02d}.png" for k in range(12)]
    make_images(root / "images", good + ["lat00.png", "lat01.png", "front00.png", "front01.png", "extra.png"])
    records = [{"conversations": [turn("human", f"<image>Describe chest film {k}."),
                                  turn("gpt", f"Report {k}: lungs clear.")],
                "images": [f"images/{name}"]} for k, name in enumerate(good)]
    records += [
        # two views, one tag each: both images, in order
        {"conversations": [turn("human", "<image><image>Compare the frontal and lateral views."),
                           turn("gpt", "Two views: no effusion.")],
         "images": ["images/lat00.png", "images/front00.png"]},
        # tags inside the text: moved before the question, counted
        {"conversations": [turn("system", "You are a radiologist."),
                           turn("human", "Frontal: <image> Lateral: <image> What do you see?"),
                           turn("gpt", "Normal heart size.")],
         "images": ["images/front01.png", "images/lat01.png"]},
    ]
    bad = [
        ({"conversations": [turn("human", "<image>One tag."), turn("gpt", "x")],
          "images": ["images/extra.png", "images/cxr01.png"]}, "image tags do not match images"),
        ({"conversations": [turn("gpt", "answer first"), turn("human", "<image>question")],
          "images": ["images/extra.png"]}, "invalid role order"),
        ({"conversations": [turn("human", "<image>question")], "images": ["images/extra.png"]}, "no answer"),
        ({"conversations": [turn("human", "<image>q"), turn("observation", "tool output")],
          "images": ["images/extra.png"]}, "tool turn"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", "<image> in the answer")],
          "images": ["images/extra.png"]}, "image tag in the answer"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", "")], "images": ["images/extra.png"]},
         "empty report"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", "x")], "images": ["images/gone.png"]},
         "missing image"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", "x")]}, "no image"),
        ({"conversations": "human: hi", "images": ["images/extra.png"]}, "wrong field type"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", {"text": "x"})],
          "images": ["images/extra.png"]}, "wrong field type"),
        ({"conversations": [turn("human", "<image>q"), turn("gpt", "x")], "images": {"path": "images/extra.png"}},
         "wrong field type"),
        (42, "not a JSON object"),
        # a real repeated id (the first "dup" below is kept)
        ({"id": "dup", "conversations": [turn("human", "<image>q"), turn("gpt", "x")], "images": ["images/extra.png"]},
         "duplicate id"),
    ]
    records += [
        # no tag: one per image is added before the first question, as ms-swift and LLaMA-Factory do
        {"conversations": [turn("human", "No tag at all."), turn("gpt", "No tag answer.")],
         "images": ["images/extra.png"]},
        # multi-turn: every pair kept, the later question's tag moved before the first
        {"conversations": [turn("human", "Q1"), turn("gpt", "A1"), turn("human", "<image>Q2"), turn("gpt", "A2")],
         "images": ["images/extra.png"]},
        # a second question about an image already used: its own record, in the same split
        {"conversations": [turn("human", "<image>Again?"), turn("gpt", "Still clear.")], "images": ["images/cxr03.png"]},
        {"id": "dup", "conversations": [turn("human", "<image>first dup"), turn("gpt", "kept")],
         "images": ["images/cxr04.png"]},
    ]
    records += [rec for rec, _ in bad]
    src = root / "xray_sharegpt.json"
    src.write_text(json.dumps(records, ensure_ascii=False, indent=1))
    return src, 18


def test_sharegpt_list_every_skip_and_byte_identical(tmp_path):
    src, n_good = sharegpt_set(tmp_path / "src")
    assert lf.detect(src)
    out = tmp_path / "out"
    assert convert(src, out, "--workers", "2") == 0
    s = summary_of(out)
    assert s["format"] == "llamafactory" and s["unit"] == "image" and s["split"] == "seeded"
    assert s["read"] == 31 and s["written"] == n_good and s["read"] == s["written"] + s["skipped"]
    assert s["skipped_by_reason"] == {"duplicate id": 1, "empty report": 1, "image tag in the answer": 1,
                                      "image tags do not match images": 1, "invalid role order": 1,
                                      "missing image": 1, "no answer": 1,
                                      "no image": 1, "not a JSON object": 1, "tool turn": 1, "wrong field type": 3}
    extra = s["llamafactory"]
    assert extra["layout"] == "sharegpt" and extra["tags"]["role_tag"] == "from"
    assert extra["records_with_own_system_prompt"] == 1 and extra["image_tags_moved_before_question"] == 2
    assert extra["image_tags_added_before_question"] == 1 and extra["multi_turn_records"] == 1
    assert s["images_per_record"] == {"1": 16, "2": 2}
    rows = written(out)
    # the record's own question and answer, the tags written before it, one per image; ids are the records' own
    one = rows["xray_sharegpt_5"]
    assert one["messages"] == [{"role": "user", "content": "<image>Describe chest film 5."},
                               {"role": "assistant", "content": "Report 5: lungs clear."}]
    assert one["images"] == [str((tmp_path / "src" / "images" / "cxr05.png").resolve())]
    two = rows["xray_sharegpt_12"]
    assert two["messages"][0]["content"] == "<image><image>Compare the frontal and lateral views."
    assert [Path(p).name for p in two["images"]] == ["lat00.png", "front00.png"], "the record's order"
    assert rows["xray_sharegpt_13"]["messages"][0]["content"] == "<image><image>Frontal: Lateral: What do you see?"
    assert rows["xray_sharegpt_14"]["messages"] == [{"role": "user", "content": "<image>No tag at all."},
                                                    {"role": "assistant", "content": "No tag answer."}]
    assert [m["content"] for m in rows["xray_sharegpt_15"]["messages"]] == ["<image>Q1", "A1", "Q2", "A2"]
    assert rows["dup"]["messages"][1]["content"] == "kept"
    # all records on one image sit in one split
    split_of = {r["id"]: split for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")}
    assert split_of["xray_sharegpt_16"] == split_of["xray_sharegpt_3"]
    assert split_of["xray_sharegpt_14"] == split_of["xray_sharegpt_15"]
    assert s["templates_used"] == {}, "no record's question is replaced by a template"
    # same inputs, another process and hash seed: byte-identical outputs
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    shutil.rmtree(out)
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(src), "--output_dir", str(out),
         "--quiet", "--lang", "en", "--workers", "1"], env={"PYTHONHASHSEED": "4321"})
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == first


# --------------------------------------------------------------------------- openai messages, alpaca, JSONL
def test_openai_messages_jsonl_and_alpaca_list_and_jsonl(tmp_path):
    root = tmp_path / "src"
    make_images(root / "scans", [f"s{k}.png" for k in range(8)])
    # the openai form (role/content, a first system turn) as JSON lines, with a line that is not JSON
    lines = [json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": f"<image>\nWhat does scan {k} show?"},
                                      {"role": "assistant", "content": f"Scan {k}: normal."}],
                         "images": [f"s{k}.png"]}) for k in range(4)]
    lines.insert(2, '{"messages": [')
    (root / "openai.jsonl").write_text("\n".join(lines) + "\n")
    # alpaca with instruction + input (joined by a newline, as LLaMA-Factory does), a JSON list
    alpaca = [{"instruction": "<image>Write the report.", "input": f"Patient {k}, PA view.", "output": f"Report {k}.",
               "system": "You are a radiologist.", "images": [f"s{k}.png"]} for k in range(4, 8)]
    (root / "alpaca.json").write_text(json.dumps(alpaca))
    # alpaca as JSON lines, one record with a history (multi-turn) and one image given as text
    (root / "alpaca.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "<image>Report?", "output": "Fine.", "images": "s4.png"},
        {"instruction": "<image>And now?", "output": "Same.", "images": ["s5.png"],
         "history": [["<image>First?", "First answer."]]},  # tags count over every turn: 2 tags, 1 image
        {"instruction": "And now?", "output": "Same.", "images": ["s6.png"],
         "history": [["<image>First?", "First answer."]]}]) + "\n")

    images = ["--images_dir", str(root / "scans")]
    assert convert(root / "openai.jsonl", tmp_path / "o1", *images) == 0
    s = summary_of(tmp_path / "o1")
    assert (s["read"], s["written"], s["skipped_by_reason"]) == (5, 4, {"not JSON": 1})
    assert s["llamafactory"]["tags"]["role_tag"] == "role" and s["llamafactory"]["distinct_system_prompts"] == 1
    assert written(tmp_path / "o1")["openai_3"]["messages"][0]["content"] == "<image>What does scan 2 show?"

    assert convert(root / "alpaca.json", tmp_path / "o2", *images, "--system", "Research use only.") == 0
    rows = written(tmp_path / "o2")
    assert set(rows) == {"alpaca_0", "alpaca_1", "alpaca_2", "alpaca_3"}
    assert summary_of(tmp_path / "o2")["llamafactory"]["layout"] == "alpaca"
    assert rows["alpaca_2"]["messages"] == [{"role": "system", "content": "Research use only."},
                                      {"role": "user", "content": "<image>Write the report.\nPatient 6, PA view."},
                                      {"role": "assistant", "content": "Report 6."}]

    assert convert(root / "alpaca.jsonl", tmp_path / "o3", *images) == 0
    s = summary_of(tmp_path / "o3")
    assert (s["written"], s["skipped_by_reason"]) == (2, {"image tags do not match images": 1})
    rows = written(tmp_path / "o3")
    assert rows["alpaca_0"]["images"][0].endswith("/scans/s4.png")
    # alpaca's history comes first, as LLaMA-Factory builds the conversation
    assert [m["content"] for m in rows["alpaca_2"]["messages"]] == ["<image>First?", "First answer.", "And now?",
                                                                    "Same."]


# --------------------------------------------------------------------------- dataset_info.json
def test_dataset_info_columns_and_tags(tmp_path, capsys):
    root = tmp_path / "lf"
    make_images(root / "pics", [f"p{k}.png" for k in range(6)])
    # sharegpt with every name changed; only its dataset_info entry says how to read it
    renamed = [{"dialog": [{"speaker": "sys", "text": "Radiology assistant."},
                           {"speaker": "doctor", "text": f"<image>Findings for film {k}?"},
                           {"speaker": "model", "text": f"Film {k}: clear."}],
                "pictures": [f"pics/p{k}.png"]} for k in range(3)]
    (root / "renamed.json").write_text(json.dumps(renamed))
    # alpaca with its own column names; "input" is not mapped, so LLaMA-Factory ignores it
    alpaca = [{"question": "<image>Report this film.", "input": "ignored", "report": f"Film {k}.",
               "scans": [f"pics/p{k}.png"]} for k in range(3, 6)]
    (root / "custom_alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    info = {
        "xray_renamed": {"file_name": "renamed.json", "formatting": "sharegpt",
                         "columns": {"messages": "dialog", "images": "pictures"},
                         "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "doctor",
                                  "assistant_tag": "model", "system_tag": "sys"}},
        "xray_alpaca": {"file_name": "custom_alpaca.jsonl",
                        "columns": {"prompt": "question", "response": "report", "images": "scans"}},
        "no_images": {"file_name": "renamed.json", "formatting": "sharegpt", "columns": {"messages": "dialog"}},
        "from_hub": {"hf_hub_url": "someone/xray"},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))

    # the entry beside the file is found by its file_name (two entries name renamed.json: pick one)
    assert convert(root / "renamed.json", tmp_path / "o0", "--format", "llamafactory") == 2
    assert "entries no_images, xray_renamed all name renamed.json" in one_error(capsys)
    assert convert(root / "renamed.json", tmp_path / "o1", "--format", "llamafactory",
                   "--dataset_name", "xray_renamed") == 0
    rows = written(tmp_path / "o1")
    assert rows["renamed_1"]["messages"] == [{"role": "user", "content": "<image>Findings for film 1?"},
                                            {"role": "assistant", "content": "Film 1: clear."}]
    s = summary_of(tmp_path / "o1")
    # as in LLaMA-Factory, an entry's columns replace the defaults: the alpaca ones are unset
    assert s["llamafactory"]["columns"] == {"messages": "dialog", "images": "pictures"}
    assert "xray_renamed" in s["llamafactory"]["fields_from"]
    assert s["llamafactory"]["records_with_own_system_prompt"] == 3

    assert lf.detect(root / "custom_alpaca.jsonl") is False, "no LLaMA-Factory default keys: only its entry says"
    elsewhere = tmp_path / "config" / "dataset_info.json"
    elsewhere.parent.mkdir()
    shutil.move(root / "dataset_info.json", elsewhere)
    assert convert(root / "custom_alpaca.jsonl", tmp_path / "o2", "--format", "llamafactory",
                   "--dataset_info", str(elsewhere), "--dataset_name", "xray_alpaca", "--images_dir", str(root)) == 0
    rows = written(tmp_path / "o2")
    assert rows["custom_alpaca_1"]["messages"][0]["content"] == "<image>Report this film."
    assert rows["custom_alpaca_1"]["messages"][1]["content"] == "Film 4."

    for name, message in [("no_images", "maps no images column"), ("from_hub", "loads from hf_hub_url"),
                          ("missing", "has no entry 'missing'")]:
        assert convert(root / "renamed.json", tmp_path / "o3", "--format", "llamafactory",
                       "--dataset_info", str(elsewhere), "--dataset_name", name) == 2
        assert message in one_error(capsys)
    # without its entry, the renamed file is not readable as LLaMA-Factory's defaults
    assert convert(root / "renamed.json", tmp_path / "o4", "--format", "llamafactory") == 2
    assert "no record has a messages/conversations list" in one_error(capsys)


def test_tags_replace_the_defaults_as_a_whole(tmp_path):
    """As in LLaMA-Factory, ``tags`` without a system_tag leave it unset: a leading system turn then
    breaks the role order (LLaMA-Factory drops that record too)."""
    root = tmp_path / "lf"
    make_images(root, ["a.png", "b.png"])
    recs = [{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "A."}],
             "images": ["a.png"]},
            {"messages": [{"role": "system", "content": "S."}, {"role": "user", "content": "<image>q"},
                          {"role": "assistant", "content": "B."}], "images": ["b.png"]}]
    (root / "d.json").write_text(json.dumps(recs))
    (root / "dataset_info.json").write_text(json.dumps({"d": {
        "file_name": "d.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    assert convert(root / "d.json", tmp_path / "out") == 0
    s = summary_of(tmp_path / "out")
    assert s["written"] == 1 and s["skipped_by_reason"] == {"invalid role order": 1}


# --------------------------------------------------------------------------- detection and mistakes
def test_detection_reads_a_prefix_and_leaves_other_json_to_openi(tmp_path):
    (tmp_path / "sg.jsonl").write_text('{"conversations": [{"from": "human", "value": "x"}]}\n')
    (tmp_path / "al.json").write_text('[{"instruction": "q", "input": "", "output": "a"}]')
    (tmp_path / "openi.json").write_text('{"annotations": [{"image_id": "1_1", "caption": "say \\"messages\\": [x"}]}')
    (tmp_path / "dataset_info.json").write_text('{"x": {"columns": {"messages": "conversations"}}}')
    (tmp_path / "notes.txt").write_text('{"messages": []}')
    assert lf.detect(tmp_path / "sg.jsonl") and lf.detect(tmp_path / "al.json")
    for name in ("openi.json", "dataset_info.json", "notes.txt", "missing.json"):
        assert not lf.detect(tmp_path / name), name
    assert list(conv.READERS)[-1] == "openi" and "llamafactory" in conv.READERS


@pytest.mark.parametrize("extra, message", [
    (["--unit", "study"], "has no studies"),
    (["--split", "official"], "has no official split"),
    (["--dataset_name", "x"], "no dataset_info.json beside"),
    (["--images_dir", "/nonexistent/images"], "images folder not found"),
])
def test_user_mistakes_one_line(tmp_path, extra, message):
    make_images(tmp_path, ["a.png"])
    src = tmp_path / "d.json"
    src.write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>q"},
                                             {"role": "assistant", "content": "a"}], "images": ["a.png"]}]))
    proc = run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(src),
                "--output_dir", str(tmp_path / "o"), *extra], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [proc.stderr.strip()]
    assert message in proc.stderr


def test_a_path_too_long_and_too_many_images_are_listed_skips(tmp_path):
    """Issue 16: a path longer than the file system allows was ENAMETOOLONG (0 of 3 written); a record
    listing one image 5,000 times became one 5,000-image sample."""
    make_images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    long_path = "images/" + "n" * 5000 + ".png"
    records = [{"conversations": [turn("human", "<image>Describe."), turn("gpt", f"Report {name}.")],
                "images": [f"images/{name}"]} for name in ("a.png", "b.png")]
    records.append({"conversations": [turn("human", "<image>Describe."), turn("gpt", "Long.")], "images": [long_path]})
    records.append({"conversations": [turn("human", "<image>" * 5000 + "Describe."), turn("gpt", "Many.")],
                    "images": ["images/c.png"] * 5000})
    src = tmp_path / "data.json"
    src.write_text(json.dumps(records))
    out = tmp_path / "out"
    assert convert(src, out, "--val_ratio", "0", "--test_ratio", "0") == 0
    assert len(written(out)) == 2
    summary = summary_of(out)
    assert summary["skipped_by_reason"] == {"too many images": 1, "unreadable file": 1}, summary
    skipped = (out / "skipped.tsv").read_text()
    assert "5000 images, at most 8 (--max_images)" in skipped and "path too long" in skipped


# --------------------------------------------------------------------------- conversations, shared images
MLLM_DEMO = [  # LLaMA-Factory's data/mllm_demo.json: 6 two-turn conversations over 3 images, English and Chinese
    ("Who are they?", "They're Kane and Gretzka from Bayern Munich.", "What are they doing?",
     "They are celebrating on the soccer field.", "1.jpg"),
    ("Who is he?", "He's Thomas Muller from Bayern Munich.", "Why is he on the ground?",
     "Because he's sliding on his knees to celebrate.", "2.jpg"),
    ("Please describe this image", "Chinese astronaut Gui Haichao is giving a speech.", "What has he accomplished?",
     "He was appointed to be a payload specialist on Shenzhou 16 mission in June 2022.", "3.jpg"),
    ("他们是谁？", "他们是拜仁慕尼黑的凯恩和格雷茨卡。", "他们在做什么？", "他们在足球场上庆祝。", "1.jpg"),
    ("他是谁？", "他是来自拜仁慕尼黑的托马斯·穆勒。", "他为什么在地上？", "因为他正在双膝跪地滑行庆祝。", "2.jpg"),
    ("请描述这张图片", "中国宇航员桂海潮正在讲话。", "他取得过哪些成就？", "他于2022年6月被任命为神舟十六号任务的有效载荷专家。", "3.jpg"),
]


def mllm_demo(root: Path, tags: bool) -> Path:
    """The file in its two published forms: ``<image>`` before the first question, or no tags."""
    make_images(root / "mllm_demo_data", ["1.jpg", "2.jpg", "3.jpg"])
    records = [{"messages": [{"content": ("<image>" if tags else "") + q1, "role": "user"},
                             {"content": a1, "role": "assistant"}, {"content": q2, "role": "user"},
                             {"content": a2, "role": "assistant"}],
                "images": [f"mllm_demo_data/{image}"]} for q1, a1, q2, a2, image in MLLM_DEMO]
    src = root / "mllm_demo.json"
    src.write_text(json.dumps(records, ensure_ascii=False, indent=2))
    return src


@pytest.mark.parametrize("tags", [True, False], ids=["tagged", "untagged"])
def test_mllm_demo_reads_whole(tmp_path, tags):
    """6 of 6 records, each its whole conversation; the two records on an image share its split."""
    src = mllm_demo(tmp_path / "lf", tags)
    out = tmp_path / "out"
    assert convert(src, out, "--val_ratio", "0.34", "--test_ratio", "0.34") == 0
    s = summary_of(out)
    assert (s["read"], s["written"], s["skipped"]) == (6, 6, 0)
    extra = s["llamafactory"]
    assert extra["multi_turn_records"] == 6 and extra["image_groups"] == 3
    assert extra["image_tags_added_before_question"] == (0 if tags else 6)
    assert s["groups_per_split"] == {"train": 1, "val": 1, "test": 1}
    rows = written(out)
    assert set(rows) == {f"mllm_demo_{k}" for k in range(6)}
    for k, (q1, a1, q2, a2, image) in enumerate(MLLM_DEMO):
        row = rows[f"mllm_demo_{k}"]
        assert row["messages"] == [{"role": "user", "content": "<image>" + q1}, {"role": "assistant", "content": a1},
                                   {"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
        assert Path(row["images"][0]).name == image
    split_of = {r["id"]: split for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")}
    assert [split_of[f"mllm_demo_{k}"] for k in range(3)] == [split_of[f"mllm_demo_{k}"] for k in range(3, 6)]

    # --first_turn_only: one question and answer per sample, as report generation trains
    out2 = tmp_path / "first"
    assert convert(src, out2, "--first_turn_only") == 0
    s = summary_of(out2)
    assert (s["written"], s["skipped"], s["llamafactory"]["later_turns_dropped"]) == (6, 0, 6)
    assert written(out2)["mllm_demo_3"]["messages"] == [{"role": "user", "content": "<image>他们是谁？"},
                                                        {"role": "assistant", "content": "他们是拜仁慕尼黑的凯恩和格雷茨卡。"}]


def test_vqa_style_several_questions_per_image_and_two_image_records_join_groups(tmp_path):
    """Messages (openai form) and conversations (sharegpt form), several questions per image, a
    record on two images joining both images' questions into one group; ids from an ``id`` field."""
    root = tmp_path / "vqa"
    make_images(root, [f"v{k}.png" for k in range(6)])
    records = []
    for k in range(6):
        for n, question in enumerate(("Is there an effusion?", "Is the heart enlarged?", "Any pneumothorax?")):
            records.append({"id": f"q{k}-{n}", "messages": [{"role": "user", "content": f"<image>{question}"},
                                                            {"role": "assistant", "content": "No."}],
                            "images": [f"v{k}.png"]})
    records.append({"id": "pair", "messages": [{"role": "user", "content": "<image><image>Compare."},
                                               {"role": "assistant", "content": "Unchanged."}],
                    "images": ["v0.png", "v1.png"]})
    (root / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert convert(root / "vqa.jsonl", out, "--val_ratio", "0.3", "--test_ratio", "0.3") == 0
    s = summary_of(out)
    assert (s["read"], s["written"], s["skipped"]) == (19, 19, 0)
    assert s["llamafactory"]["image_groups"] == 5, "v0 and v1 are one group through the pair"
    split_of = {r["id"]: split for split in ("train", "val", "test") for r in read_jsonl(out / f"{split}.jsonl")}
    assert len({split_of[f"q0-{n}"] for n in range(3)} | {split_of[f"q1-{n}"] for n in range(3)}
               | {split_of["pair"]}) == 1
    for k in range(2, 6):
        assert len({split_of[f"q{k}-{n}"] for n in range(3)}) == 1

    # the same in the sharegpt form, with no tags: added, counted
    conversations = [{"conversations": [{"from": "human", "value": r["messages"][0]["content"].replace("<image>", "")},
                                        {"from": "gpt", "value": "No."}], "images": r["images"]} for r in records]
    (root / "vqa_sharegpt.json").write_text(json.dumps(conversations))
    assert convert(root / "vqa_sharegpt.json", tmp_path / "out2") == 0
    s = summary_of(tmp_path / "out2")
    assert (s["written"], s["llamafactory"]["image_tags_added_before_question"]) == (19, 19)
    assert written(tmp_path / "out2")["vqa_sharegpt_18"]["messages"][0]["content"] == "<image><image>Compare."
