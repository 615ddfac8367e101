"""GREEN (Ostmeier et al. 2024, "GREEN: Generative Radiology Report Evaluation and Error Notation"), as
ReXrank reports it: a judge language model, ``StanfordAIMI/GREEN-RadLlama2-7b``, reads the reference and
the candidate in GREEN's fixed prompt and writes its assessment; from it, GREEN per report is
``matched findings / (matched findings + clinically significant errors (a)-(f))``.

Everything here follows the reference implementation that RadEval 2.2.1 bundles
(``radeval/metrics/green_score/green.py`` and ``utils.py``, the Stanford-AIMI/GREEN code):

* the prompt: ``make_prompt``, each report cut to its first 300 words;
* the chat: RadEval's chat template (``<|user|>`` / ``<|assistant|>``), the tokenizer loaded with
  ``add_eos_token=True``, padding on the left with the end-of-sequence token, prompts cut at 2,048 tokens;
* generation: greedy (``do_sample=False``), batches of 8, ``max_length=2048`` (prompt and answer
  together), then the whole sequence decoded without special tokens and cleaned (``clean_responses``);
* parsing and score: ``GREEN.parse_error_counts`` and ``GREEN.compute_green``. A response without a
  ``[Matched Findings]`` number (unparseable output included) scores 0, as GREEN scores it; a missing
  ``[Clinically Significant Errors]`` section counts 0 errors; a section that begins with "No" counts 0.

Differences, on purpose: bf16 on a GPU (RadEval: float16), float32 on the CPU (as RadEval); the model is
loaded without ``trust_remote_code`` (GREEN-RadLlama2-7b is a plain ``LlamaForCausalLM``); progress goes to
stderr per batch (never report text); ``MEDSWIFT_GREEN_MAX_NEW_TOKENS`` can cap the answer's tokens (tests,
quick looks; a capped answer may lose its [Matched Findings] and score 0, so figures are GREEN's only unset).

Why the prompt, cleaning and parsing are written out here rather than imported: RadEval is the maintained
package that holds them, but installing it pulls spaCy, stanza and medspacy and would downgrade numpy on this
stack, and importing ``radeval`` at all runs its package ``__init__`` (every metric, nltk downloads).
test/test_field_metrics.py checks these functions against RadEval's own, loaded from its files.
Research only, not diagnosis.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from medswift.core.errors import UsageError
from medswift.eval.field import weights

MAX_LENGTH = 2048   # GREEN.max_length: prompt cut and generation limit, in tokens
BATCH_SIZE = 8      # GREEN.batch_size
MAX_WORDS = 300     # make_prompt(max_len=300): words kept of each report
MAX_NEW_TOKENS_ENV = "MEDSWIFT_GREEN_MAX_NEW_TOKENS"
CATEGORIES = ("Clinically Significant Errors", "Clinically Insignificant Errors", "Matched Findings")
SUB_CATEGORIES = ("(a) False report of a finding in the candidate",
                  "(b) Missing a finding present in the reference",
                  "(c) Misidentification of a finding's anatomic location/position",
                  "(d) Misassessment of the severity of a finding",
                  "(e) Mentioning a comparison that isn't in the reference",
                  "(f) Omitting a comparison detailing a change from a prior study")
COUNT_KEYS = ("green_a_false_finding", "green_b_missing_finding", "green_c_location", "green_d_severity",
              "green_e_false_comparison", "green_f_missing_comparison")
# RadEval's GREEN chat template, verbatim
CHAT_TEMPLATE = ("{% for message in messages %}\n"
                 "{% if message['from'] == 'human' %}\n"
                 "{{ '<|user|>\\n' + message['value'] + eos_token }}\n"
                 "{% elif message['from'] == 'system' %}\n"
                 "{{ '<|system|>\\n' + message['value'] + eos_token }}\n"
                 "{% elif message['from'] == 'gpt' %}\n"
                 "{{ '<|assistant|>\\n'  + message['value'] + eos_token }}\n"
                 "{% endif %}\n"
                 "{% if loop.last and add_generation_prompt %}\n"
                 "{{ '<|assistant|>' }}\n"
                 "{% endif %}\n"
                 "{% endfor %}")
# make_prompt's text, verbatim (reports go in at {reference} and {candidate})
PROMPT = """Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology report composed by expert radiologists.

    Process Overview: You will be presented with:

    1. The criteria for making a judgment.
    2. The reference radiology report.
    3. The candidate radiology report.
    4. The desired format for your assessment.

    1. Criteria for Judgment:

    For each candidate report, determine:

    The count of clinically significant errors.
    The count of clinically insignificant errors.

    Errors can fall into one of these categories:

    a) False report of a finding in the candidate.
    b) Missing a finding present in the reference.
    c) Misidentification of a finding's anatomic location/position.
    d) Misassessment of the severity of a finding.
    e) Mentioning a comparison that isn't in the reference.
    f) Omitting a comparison detailing a change from a prior study.
    Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only the findings that appear in both reports.

    2. Reference Report:
    {reference}

    3. Candidate Report:
    {candidate}

    4. Reporting Your Assessment:

    Follow this specific format for your output, even if no errors are found:
    ```
    [Explanation]:
    <Explanation>

    [Clinically Significant Errors]:
    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>
    ....
    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>

    [Clinically Insignificant Errors]:
    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>
    ....
    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>

    [Matched Findings]:
    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>
    ```
"""


def make_prompt(reference: str, candidate: str) -> str:
    """GREEN's prompt for one pair (utils.make_prompt): each report's first 300 words, single-spaced."""
    return PROMPT.format(reference=" ".join(reference.split()[:MAX_WORDS]),
                         candidate=" ".join(candidate.split()[:MAX_WORDS]))


def clean_response(response: str) -> str:
    """utils.clean_responses: the text after the last ``<|assistant|>`` (and after ``[Explanation]:``),
    without ``</s>`` and ``<unk>``. Its explanation test is kept as it behaves: RadEval's
    ``("A" or "B") in response`` is ``"A" in response``."""
    if "[Explanation]:" in response:
        if "<|assistant|>" in response:
            response = response.split("<|assistant|>")[-1]
        if "[Explanation]:\n    <Explanation>\n" in response:
            response = response.split("[Explanation]:")[1]
        else:
            response = response.split("[Explanation]:")[-1]
    if "<|assistant|>" in response:
        response = response.split("<|assistant|>")[-1]
    return response.replace("</s>", "").replace("<unk>", "")


def parse_counts(text: str, category: str) -> tuple[int, list[int]]:
    """GREEN.parse_error_counts: (total, six per-letter counts) of an error section, or (matched, zeros)
    for "Matched Findings"; a missing section, or one that begins with "No", is (0, zeros)."""
    counts = [0] * len(SUB_CATEGORIES)
    found = re.search(rf"\[{category}\]:\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    if not found or found.group(1).startswith("No"):
        return 0, counts
    body = found.group(1)
    if category == "Matched Findings":
        numbers = re.findall(r"^\b\d+\b(?=\.)", body, re.MULTILINE)
        return (int(numbers[0]) if numbers else 0), counts
    prefixes = [s.split(" ", 1)[0] + " " for s in SUB_CATEGORIES]
    lines = sorted(re.findall(r"\([a-f]\) .*", body))
    if not lines:  # the numbered form (1)-(6)
        lines = sorted(re.findall(r"\([1-6]\) .*", body))
        prefixes = [f"({i}) " for i in range(1, len(SUB_CATEGORIES) + 1)]
    for k, prefix in enumerate(prefixes):
        for line in lines:
            number = re.search(r"(?<=: )\b\d+\b(?=\.)", line) if line.startswith(prefix) else None
            if number:
                counts[k] = int(number.group(0))
    return sum(counts), counts


def green_of(response: str) -> float:
    """GREEN.compute_green: 0 without matched findings, else matched / (matched + significant errors)."""
    matched, _ = parse_counts(response, CATEGORIES[2])
    if matched == 0:
        return 0.0
    _, errors = parse_counts(response, CATEGORIES[0])
    return matched / (matched + sum(errors))


def counts_of(response: str) -> dict[str, int]:
    """GREEN.compute_error_count as named columns: the six significant-error counts and matched findings."""
    _, errors = parse_counts(response, CATEGORIES[0])
    return {**dict(zip(COUNT_KEYS, errors)), "green_matched_findings": parse_counts(response, CATEGORIES[2])[0]}


def max_new_tokens_setting() -> int | None:
    """``MEDSWIFT_GREEN_MAX_NEW_TOKENS`` as a positive integer, None when unset (GREEN's own limit only)."""
    value = os.environ.get(MAX_NEW_TOKENS_ENV, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise UsageError(f"{MAX_NEW_TOKENS_ENV}={value!r}: expected a positive whole number of tokens")
    return int(value)


class Green:
    """GREEN-RadLlama2-7b from a local folder, offline: GPU (bf16) when there is one, else CPU (float32)."""

    def __init__(self, folder: Path, device: str | None = None, max_new_tokens: int | None = None,
                 batch_size: int = BATCH_SIZE):
        weights.go_offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map={"": self.device},
                                                              local_files_only=True)  # straight onto the device
            self.tokenizer = AutoTokenizer.from_pretrained(folder, add_eos_token=True, use_fast=True,
                                                           padding_side="left", local_files_only=True)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f"GREEN-RadLlama2-7b in {folder} does not load: {first}") from None
        self.model.eval()
        self.tokenizer.chat_template = CHAT_TEMPLATE
        self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.clean_up_tokenization_spaces = True
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def chat_texts(self, prompts: list[str]) -> list[str]:
        """GREEN.get_response's chat: the prompt as the user's turn, an empty assistant turn, then the generation prompt."""
        return [self.tokenizer.apply_chat_template([{"from": "human", "value": p}, {"from": "gpt", "value": ""}],
                                                   tokenize=False, add_generation_prompt=True) for p in prompts]

    def generate(self, prompts: list[str]) -> list[str]:
        """One batch, as GREEN.get_response: greedy, whole sequences decoded, then cleaned."""
        import torch

        toks = self.tokenizer(self.chat_texts(prompts), return_tensors="pt", padding=True, truncation=True,
                              max_length=MAX_LENGTH).to(self.device)
        limit = MAX_LENGTH
        if self.max_new_tokens is not None:
            limit = min(MAX_LENGTH, toks["input_ids"].shape[1] + self.max_new_tokens)
        with torch.inference_mode():
            outputs = self.model.generate(input_ids=toks["input_ids"], attention_mask=toks["attention_mask"],
                                          eos_token_id=self.tokenizer.eos_token_id,
                                          pad_token_id=self.tokenizer.pad_token_id, max_length=limit, do_sample=False)
        return [clean_response(r) for r in self.tokenizer.batch_decode(outputs, skip_special_tokens=True)]

    def responses(self, refs: list[str], preds: list[str]) -> list[str]:
        """The judge's cleaned answer per pair, in batches; progress (counts and times only) on stderr."""
        prompts = [make_prompt(r, p) for r, p in zip(refs, preds)]
        if self.device == "cpu" and self.parameters > 1e9:
            print(f"GREEN: a {self.parameters / 1e9:.1f}B-parameter judge on the CPU is slow (minutes a pair; "
                  "a GPU is advised, docs/metrics.md)", file=sys.stderr, flush=True)
        out: list[str] = []
        start = time.monotonic()
        for i in range(0, len(prompts), self.batch_size):
            out += self.generate(prompts[i:i + self.batch_size])
            elapsed = time.monotonic() - start
            print(f"GREEN: {len(out)}/{len(prompts)} pairs judged ({elapsed:.0f} s, "
                  f"{len(out) / max(elapsed, 1e-9):.2f} pairs/s, {self.device})", file=sys.stderr, flush=True)
        return out

    def scores(self, refs: list[str], preds: list[str]) -> tuple[np.ndarray, list[dict]]:
        """(GREEN per pair, one dict of its six significant-error counts and matched findings per pair). The
        judge's answers themselves stay in memory: they quote the reports (field_scores.jsonl holds no text)."""
        if not refs:
            return np.zeros(0), []
        answers = self.responses(refs, preds)
        return np.array([green_of(a) for a in answers], dtype=np.float64), [counts_of(a) for a in answers]
