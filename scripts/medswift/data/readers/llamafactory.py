"""Reader: LLaMA-Factory exports (multimodal sharegpt/openai-style messages or alpaca records).

Usage:
    python scripts/convert_xray_swift.py --input /data/lf/xray_sft.json --output_dir data/lf_swift \
        [--images_dir /data/lf] [--dataset_info /data/lf/dataset_info.json --dataset_name xray_sft]

The file is a JSON list or JSON lines, in one of LLaMA-Factory's layouts (its ``data/README.md``):

* sharegpt: ``{"conversations": [{"from": "human", "value": "<image>..."}, {"from": "gpt", "value": ...}],
  "images": [...], "system": ...}``, or the openai form ``{"messages": [{"role": "user", "content": ...},
  {"role": "assistant", ...}], "images": [...]}`` (a first ``system`` turn is the system prompt);
* alpaca: ``{"instruction": ..., "input": ..., "output": ..., "images": [...], "system": ..., "history": ...}``
  (the question is ``instruction`` and ``input`` joined by a newline, as LLaMA-Factory builds it).

A ``dataset_info.json`` entry renames the fields the way LLaMA-Factory reads it: ``formatting``
(alpaca by default), ``columns`` (prompt, query, response, history, messages, system, images) and
``tags`` (role_tag, content_tag, user_tag, assistant_tag, system_tag...). As in LLaMA-Factory, an
entry's ``columns``/``tags`` replace the defaults as a whole: a column or tag it does not name is
unset. The entry is the one named by ``--dataset_name``, else the one whose ``file_name`` is the
input file, in ``--dataset_info`` or the ``dataset_info.json`` beside the input. Without an entry the
layout is read from the keys of the file (``messages``/``conversations`` with ``from``/``value`` or
``role``/``content`` turns; else alpaca), with ``images``, ``system`` and ``history`` as those fields.

Each record is one sample with its own id (its ``id`` field, else ``<file stem>_<index>``, the
record's position in the file): its images in order (paths relative to ``--images_dir``, default
the input's folder) and its conversation, every user/assistant pair kept (ms-swift trains every
assistant turn; alpaca's ``history`` pairs come first, as in LLaMA-Factory). The ``<image>`` tags,
one per image as LLaMA-Factory requires, are written before the first question; a record without
any gets them there, as ms-swift and LLaMA-Factory add them (counted in summary.json). Records may
share images (several questions about one image, VQA style): the images are the split group, so
every record on an image, and every image a record joins to it, sits in one split.
``--first_turn_only`` keeps one question and answer per sample (the first pair, as report
generation trains; the later pairs dropped are counted in summary.json). A tag in a dropped turn
still counts for its image. Listed skips: tag/image count mismatches, tool turns, wrongly typed
fields, an ``id`` used twice ("duplicate id"). A
per-record system prompt is not written (counted in summary.json; ``--system`` sets one for every
sample).

For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.core.files import may_be_file, read_text_utf8
from medswift.data.readers.contract import ReaderOptions, flag, switch
from medswift.data.pipeline.records import (BadRecord, Candidate, Reading, caption_id, json_type, load_json_records,
                                   require_object, text_field)

NAME = "llamafactory"
VIEWS = False  # no view positions: --views does not apply
DATASET_INFO = "dataset_info.json"
IMAGE_TAG = "<image>"
OTHER_MEDIA_TAGS = ("<video>", "<audio>")  # ms-swift would look for a video or audio file
FORMATTINGS = ("alpaca", "sharegpt", "openai")  # openai: newer LLaMA-Factory's name for messages data
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")

# LLaMA-Factory's DatasetAttr defaults (src/llamafactory/data/parser.py).
LF_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": None,
              "messages": "conversations", "system": None, "images": None}
LF_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
           "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
LAYOUT_COLUMNS = {"alpaca": ("prompt", "query", "response", "history", "system", "images"),
                  "sharegpt": ("messages", "system", "images")}
# The tags LLaMA-Factory's README gives for the openai form (the tags it leaves out are unset).
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": None, "function_tag": None, "system_tag": "system"}

# detect(): a record key in the first bytes (a quote escaped inside a text does not count).
_KEY = re.compile(rb'(?<!\\)"(messages|conversations)"\s*:\s*\[|(?<!\\)"(instruction|output)"\s*:')
# an <image> tag with the blanks after it (and at most one line break), removed from the question
_TAG_AND_BLANKS = re.compile(re.escape(IMAGE_TAG) + r"[ \t]*(?:\r?\n)?")


@dataclass
class Layout:
    formatting: str  # "alpaca" or "sharegpt" (openai is read as sharegpt)
    columns: dict[str, str | None]
    tags: dict[str, str | None]
    source: str  # where the field names came from, for summary.json


def detect(path: Path) -> bool:
    """A .json/.jsonl file whose first 64 KiB hold a messages/conversations list or
    instruction and output keys."""
    try:
        if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl") or path.name == DATASET_INFO:
            return False
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except (OSError, ValueError):
        return False
    keys = {m.group(1) or m.group(2) for m in _KEY.finditer(head)}
    return bool(keys & {b"messages", b"conversations"}) or {b"instruction", b"output"} <= keys


# --------------------------------------------------------------------------- dataset_info.json
def _names_file(entry: dict, folder: Path, path: Path) -> bool:
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        return False
    try:
        return (folder / name).resolve() == path.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def find_entry(path: Path, info_arg: str | None, name: str | None) -> tuple[str | None, dict | None, str]:
    """``(entry name, entry, note)``: the dataset_info.json entry that describes ``path``, or none
    (the note says why, for summary.json)."""
    info_path = Path(info_arg) if info_arg else path.parent / DATASET_INFO
    if not info_path.is_file():
        if info_arg:
            raise UsageError(f"--dataset_info not found: {info_path}")
        if name:
            raise UsageError(f"--dataset_name {name} given but there is no {DATASET_INFO} beside {path}; "
                             "give --dataset_info")
        return None, None, "no dataset_info.json: keys read from the file"
    try:
        info = json.loads(read_text_utf8(info_path, "dataset_info file"))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{info_path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise UsageError(f"{info_path}: expected an object of dataset entries, found {json_type(info)}")
    if name:
        if name not in info:
            known = ", ".join(sorted(info)[:10]) or "none"
            raise UsageError(f"{info_path} has no entry {name!r} (entries: {known})")
        return name, info[name], f"entry {name!r} of {info_path.resolve()}"
    matches = sorted(n for n, e in info.items() if isinstance(e, dict) and _names_file(e, info_path.parent, path))
    if len(matches) > 1:
        raise UsageError(f"{info_path}: entries {', '.join(matches)} all name {path.name}; "
                         "pick one with --dataset_name")
    if matches:
        return matches[0], info[matches[0]], f"entry {matches[0]!r} of {info_path.resolve()}"
    if info_arg:
        raise UsageError(f"{info_path}: no entry has file_name {path.name}; pick one with --dataset_name")
    return None, None, f"{info_path.resolve()} has no entry for this file: keys read from the file"


def _names_map(entry: dict, key: str, defaults: dict, where: str) -> dict[str, str | None]:
    """LLaMA-Factory's ``set_attr``: with ``columns``/``tags`` present, each name is what the entry
    says, unset (None) when it says nothing; without them, the defaults."""
    if key not in entry:
        return dict(defaults)
    given = entry[key]
    if not isinstance(given, dict) or not all(v is None or isinstance(v, str) for v in given.values()):
        raise UsageError(f"{where}: {key!r} must map names to text")
    return {k: given.get(k) or None for k in defaults}


def layout_from_entry(name: str, entry, source: str) -> Layout:
    where = f"dataset_info entry {name!r}"
    if not isinstance(entry, dict):
        raise UsageError(f"{where} is {json_type(entry)}, expected an object")
    hub = [k for k in HUB_KEYS if k in entry]
    if hub:
        raise UsageError(f"{where} loads from {hub[0]}; download the data and give its file with --input")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise UsageError(f"{where}: formatting {formatting!r} is not one of {', '.join(FORMATTINGS)}")
    if entry.get("ranking"):
        raise UsageError(f"{where} is a preference (ranking) dataset; only supervised records can be converted")
    columns = _names_map(entry, "columns", LF_COLUMNS, where)
    if not columns["images"]:
        raise UsageError(f"{where} maps no images column (LLaMA-Factory would train it without images); "
                         'add "images": "<column>" to its columns')
    return Layout("alpaca" if formatting == "alpaca" else "sharegpt", columns,
                  _names_map(entry, "tags", LF_TAGS, where), source)


def layout_from_keys(path: Path, records: list[tuple[str, object]], note: str) -> Layout:
    """The layout of a file without a dataset_info entry, from its first recognisable record."""
    for _, rec in records:
        if not isinstance(rec, dict):
            continue
        for key in ("messages", "conversations"):
            if isinstance(rec.get(key), list):
                first = next((m for m in rec[key] if isinstance(m, dict)), {})
                tags = OPENAI_TAGS if "role" in first and "from" not in first else LF_TAGS
                return Layout("sharegpt", {**LF_COLUMNS, "messages": key, "system": "system", "images": "images"},
                              dict(tags), note)
        if "instruction" in rec or "output" in rec:
            return Layout("alpaca", {**LF_COLUMNS, "history": "history", "system": "system", "images": "images"},
                          dict(LF_TAGS), note)
    raise UsageError(f"{path}: no record has a messages/conversations list or instruction/output keys; "
                     "is it a LLaMA-Factory export? (a dataset_info.json entry can name its fields)")


# --------------------------------------------------------------------------- records
@dataclass
class Conversation:
    pairs: list[tuple[str, str]]  # (question, answer) per user/assistant pair, in order
    system: str


def _sharegpt_conversation(rec: dict, where: str, layout: Layout) -> Conversation:
    col, tags = layout.columns["messages"], layout.tags
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    messages = rec.get(col)
    if messages is None:
        raise BadRecord("no conversation", f"{where}: no {col!r}")
    if not isinstance(messages, list):
        raise BadRecord("wrong field type", f"{where}: {col!r} is {json_type(messages)}, expected a list")
    for k, message in enumerate(messages):
        require_object(message, f"{where} message {k}")
    system = ""
    if tags["system_tag"] and messages and messages[0].get(role_tag) == tags["system_tag"]:
        system, messages = text_field(messages[0], content_tag, f"{where} message 0"), messages[1:]
    elif layout.columns["system"]:
        system = text_field(rec, layout.columns["system"], where)
    tool_roles = {tags["observation_tag"], tags["function_tag"]} - {None}
    texts = []
    for k, message in enumerate(messages):
        role, expected = message.get(role_tag), tags["user_tag"] if k % 2 == 0 else tags["assistant_tag"]
        if isinstance(role, str) and role in tool_roles:
            raise BadRecord("tool turn", f"{where}: message {k} has role {role!r}")
        if role != expected or not isinstance(role, str):  # LLaMA-Factory drops these as "invalid role tag"
            raise BadRecord("invalid role order",
                            f"{where}: message {k} has {role_tag} {role!r}, expected {expected!r}")
        texts.append(text_field(message, content_tag, f"{where} message {k}"))
    if not texts:
        raise BadRecord("no conversation", f"{where}: {col!r} is empty")
    if len(texts) % 2:
        raise BadRecord("no answer", f"{where}: the conversation ends with a user turn")
    return Conversation(list(zip(texts[::2], texts[1::2])), system)


def _alpaca_conversation(rec: dict, where: str, layout: Layout) -> Conversation:
    cols = layout.columns
    history = rec.get(cols["history"]) if cols["history"] else None
    if history is not None and not isinstance(history, list):
        raise BadRecord("wrong field type", f"{where}: {cols['history']!r} is {json_type(history)}, expected a list")
    pairs = []
    for k, pair in enumerate(history or []):  # LLaMA-Factory: [[question, answer], ...] before the instruction
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise BadRecord("wrong field type", f"{where}: {cols['history']!r} item {k} is not [question, answer]")
        pairs.append((pair[0].strip(), pair[1].strip()))
    parts = [text_field(rec, cols[c], where) for c in ("prompt", "query") if cols[c]]
    answer = text_field(rec, cols["response"], where) if cols["response"] else ""
    system = text_field(rec, cols["system"], where) if cols["system"] else ""
    return Conversation(pairs + [("\n".join(p for p in parts if p), answer)], system)


def _images(rec: dict, column: str, where: str) -> list[str]:
    """The record's image paths, in order; LLaMA-Factory also takes one path as text."""
    value = rec.get(column)
    if isinstance(value, str):
        value = [value] if value.strip() else []
    if value is None or value == []:
        raise BadRecord("no image", f"{where}: no {column!r}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRecord("wrong field type", f"{where}: {column!r} must be a list of image paths")
    if not all(v.strip() for v in value):
        raise BadRecord("no image path", f"{where}: an empty path in {column!r}")
    return [v.strip() for v in value]


def to_candidate(rec, where: str, position: int, stem: str, layout: Layout, first_turn_only: bool,
                 max_images: int = 8) -> Candidate:
    """One record as one candidate; a record that cannot be used carries its problem (one naming
    more than ``max_images`` images too: a record listing one image 5,000 times is no sample). Its
    id is its own: its ``id`` field when it has one, else its position in the file."""
    rid = f"{stem}_{position}"
    try:
        if isinstance(rec, BadRecord):
            raise rec
        require_object(rec, where)
        rid = text_field(rec, "id", where, id_like=True) or rid
        images = _images(rec, layout.columns["images"], where)
        if len(images) > max_images:
            raise BadRecord("too many images", f"{where}: {len(images)} images, at most {max_images} (--max_images)")
        talk = (_alpaca_conversation if layout.formatting == "alpaca" else _sharegpt_conversation)(rec, where, layout)
        dropped = len(talk.pairs) - 1 if first_turn_only else 0
        if dropped:  # one question and answer per sample, as report generation trains
            talk.pairs = talk.pairs[:1]
        questions, answers = [q for q, _ in talk.pairs], [a for _, a in talk.pairs]
        if any(IMAGE_TAG in a for a in answers):
            raise BadRecord("image tag in the answer", where)
        if any(tag in text for tag in OTHER_MEDIA_TAGS for text in questions + answers):
            raise BadRecord("video or audio tag", where)
        if not all(answers[1:]):
            raise BadRecord("empty answer", f"{where}: a later assistant turn is empty")
        tags = sum(q.count(IMAGE_TAG) for q in questions)
        if tags and tags != len(images):
            raise BadRecord("image tags do not match images", f"{where}: {tags} {IMAGE_TAG} tags, {len(images)} images")
        # The converter writes the tags before the first question; say so when they stood elsewhere.
        first = questions[0]
        moved = bool(tags) and (tags > first.count(IMAGE_TAG)
                                or bool(first[:first.rfind(IMAGE_TAG)].replace(IMAGE_TAG, "").strip()))
        questions = [_TAG_AND_BLANKS.sub("", q).strip() for q in questions]
        return Candidate(rid, images, fields={
            "report": answers[0], "prompt": questions[0], "later_turns": list(zip(questions[1:], answers[1:])),
            "system": talk.system, "tags_moved": moved, "tags_added": not tags, "turns_dropped": dropped})
    except BadRecord as bad:
        return Candidate(rid, "", bad.problem)


@dataclass(frozen=True)
class Options(ReaderOptions):
    dataset_info: str | None = flag("llamafactory: the dataset_info.json naming the file's fields "
                                    "(default: the one beside --input, when it has an entry for it)")
    dataset_name: str | None = flag("llamafactory: the dataset_info.json entry to use")
    max_images: str | None = flag("llamafactory: most images per sample (default 8); a record with more is a "
                                  "listed skip")
    first_turn_only: bool = switch("llamafactory: keep each conversation's first question and answer only "
                                   "(report generation); later pairs are dropped and counted (default: every "
                                   "pair is kept)")

    def images_ceiling(self) -> int:
        """``--max_images`` as a number (default 8), or one clear error."""
        try:
            value = int(self.max_images) if self.max_images is not None else 8
        except ValueError:
            value = 0
        if value < 1:
            raise UsageError(f"--max_images must be a whole number of at least 1, got {self.max_images}")
        return value


add_args = Options.add_args


def group_by_shared_images(candidates: list[Candidate]) -> int:
    """Records that share an image (as written, normalised) become one split group, transitively:
    a record on images A and B joins every record on A to every record on B. Returns the number
    of groups."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = key = parent[parent[key]]
        return key

    for cand in candidates:
        keys = [caption_id(img) for img in cand.images]
        for key in keys[1:]:
            a, b = sorted((root(keys[0]), root(key)))
            parent[b] = a
    for cand in candidates:
        if cand.images:
            cand.group = root(caption_id(cand.images[0]))
    return len({cand.group for cand in candidates if cand.images})



def read(options: Options) -> Reading:
    path = Path(options.input)
    if options.unit == "study":
        raise UsageError(f"the {NAME} format has no studies (each record is one sample with its own images); "
                         "leave --unit out")
    if not path.is_file():
        raise UsageError(f"input file not found: {path}")
    images_dir = Path(options.images_dir) if options.images_dir else path.parent
    if not images_dir.is_dir():
        raise UsageError(f"images folder not found: {images_dir}")
    name, entry, note = find_entry(path, options.dataset_info, options.dataset_name)
    records = load_json_records(path, "input file")
    layout = layout_from_entry(name, entry, note) if entry is not None else layout_from_keys(path, records, note)
    key = layout.columns["messages"] if layout.formatting == "sharegpt" else layout.columns["response"]
    if records and not key:
        raise UsageError(f"{layout.source}: no {'messages' if layout.formatting == 'sharegpt' else 'response'} column")
    if records and not any(isinstance(r, dict) and key in r for _, r in records):
        raise UsageError(f"{path}: no record has the key {key!r} ({layout.formatting} layout, {layout.source})")

    candidates = [to_candidate(rec, where, n, path.stem, layout, options.first_turn_only, options.images_ceiling())
                  for n, (where, rec) in enumerate(records)]
    groups = group_by_shared_images(candidates)
    # Paths as written, relative to the images folder; validate_records refuses any that resolve outside it.
    # may_be_file: a path too long or a symlink loop is indexed, and its check lists it (is_file() raised)
    index = {img: images_dir / img for c in candidates for img in c.images if may_be_file(images_dir / img)}
    usable = [c for c in candidates if not c.problem]
    systems = Counter(c.fields["system"] for c in usable if c.fields["system"])
    return Reading(candidates, [images_dir], index, default_unit="image", studies=False, own_prompts=True, extra={
        "llamafactory": {
            "layout": layout.formatting, "fields_from": layout.source,
            "columns": {k: v for k, v in layout.columns.items() if v and k in LAYOUT_COLUMNS[layout.formatting]},
            "tags": layout.tags if layout.formatting == "sharegpt" else None,
            "groups": "records sharing an image are one group (one split); LLaMA-Factory records carry no "
                      "patient or study id",
            "image_groups": groups, "first_turn_only": options.first_turn_only,
            "multi_turn_records": sum(1 for c in usable if c.fields["later_turns"]),
            "later_turns_dropped": sum(c.fields["turns_dropped"] for c in usable),
            "image_tags_added_before_question": sum(1 for c in usable if c.fields["tags_added"]),
            "records_with_own_system_prompt": sum(systems.values()), "distinct_system_prompts": len(systems),
            "system_prompt_note": "per-record system prompts are not written; --system sets one for every sample",
            "image_tags_moved_before_question": sum(1 for c in usable if c.fields["tags_moved"]),
        }})
