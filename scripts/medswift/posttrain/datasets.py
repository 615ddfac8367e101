"""The converted data seen by the post-training launchers (GRPO and DPO), and their checks.

Usage (the launchers call these; by hand to look at what they feed ms-swift):
    python -m medswift.posttrain.datasets grpo_view --input data/openi_swift/train.jsonl --output_dir results/grpo/data
    python -m medswift.posttrain.datasets check_rewards --plugin scripts/swift_plugins/medswift_rewards.py medswift_findings
    python -m medswift.posttrain.datasets sample_input --input data/openi_swift/train.jsonl --num_samples 4 --output s.jsonl
    python -m medswift.posttrain.datasets pairs --samples samples.jsonl --output pairs.jsonl --reward_funcs medswift_findings
    python -m medswift.posttrain.datasets check_pairs pairs.jsonl
    python -m medswift.posttrain.datasets plan --input data/openi_swift/train.jsonl --image_tokens 64 --completion 256 --prompts_per_step 2
    python -m medswift.posttrain.datasets loss_types grpo

* ``grpo_view``: GRPO samples its own answers, so ms-swift drops the assistant turn; the reward
  still needs the reference report, so each record gets it as a ``solution`` column, taken
  from the same converter JSONL (no second conversion). The view's file name carries a hash of
  its source, so two sources never overwrite each other's view.
* ``sample_input`` / ``pairs``: DPO pairs from the SFT model's own reports: each study repeated
  NUM_SAMPLES times (ids ``<id>#<k>``) for ``scripts/batch_infer.py`` at a temperature, then each
  sample scored with the same ms-swift rewards GRPO uses (weighted as ``--reward_weights``);
  chosen = the best sample (or the reference report), rejected = the worst; a study whose
  chosen does not beat its rejected is dropped and counted. Written in ms-swift's
  ``rejected_response`` form.
* ``plan``: what the data asks of a GRPO run (vLLM's max_model_len and images per prompt), and
  a stop in one line when a step would want more prompts than the data has (0 steps).
* ``loss_types``: the loss types the installed ms-swift handles, read from its trainers.
* ``check_rewards``: every reward name must be registered (ms-swift's own ORMs and those the
  plugin registers), checked before any model loads.

For research only, not for diagnosis.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import sys
from collections import defaultdict
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl, write_json, write_jsonl
from medswift.data.pipeline.sample_length import TEMPLATE_TOKENS

SAMPLE_SEP = "#"  # sample k of study <id> is <id>#<k>


def _records(path: Path, what: str) -> list[tuple[int, dict]]:
    rows, problems = read_jsonl(path, what)
    if problems:
        raise UsageError(f"{path} {problems[0]} (a converter JSONL is expected)")
    bad = [n for n, row in rows if not isinstance(row, dict) or not isinstance(row.get("messages"), list)]
    if bad:
        raise UsageError(f"{path} line {bad[0]}: not a converter record (messages + images)")
    if not rows:
        raise UsageError(f"{what} is empty: {path}")
    return rows


def reference_of(record: dict) -> str | None:
    """The record's reference report: its last assistant turn, when that is non-blank text."""
    answers = [m.get("content") for m in record["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
    text = answers[-1] if answers else None
    return text if isinstance(text, str) and text.strip() else None


def grpo_records(path: Path) -> list[dict]:
    """The GRPO view of a converter JSONL: prompt turns only, the reference as ``solution``.
    A record with no reference report stops it (GRPO would train that prompt on a blank reward)."""
    out, missing = [], []
    for n, row in _records(path, "training data"):
        reference = reference_of(row)
        if reference is None:
            missing.append(n)
            continue
        view = {k: v for k, v in row.items() if k != "messages"}
        view["messages"] = [m for m in row["messages"] if not (isinstance(m, dict) and m.get("role") == "assistant")]
        view["solution"] = reference
        out.append(view)
    if missing:
        raise UsageError(f"{len(missing)} of {len(missing) + len(out)} records in {path} carry no reference report "
                         f"(no assistant turn with text; first at line {missing[0]}): GRPO's reward needs one per "
                         "record; convert with the reports (scripts/convert_xray_swift.py)")
    return out


def grpo_view(path: Path, output_dir: Path, write: bool = True) -> Path:
    """Write (unless ``write`` is False: a dry run) the GRPO view of ``path`` into ``output_dir``;
    returns its path, ``train_grpo-<sha of the source, 10 hex>.jsonl``."""
    records = grpo_records(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    target = output_dir / f"{path.stem}_grpo-{digest}.jsonl"
    if write and not target.is_file():
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {output_dir}: {exc.strerror or exc}") from None
        write_jsonl(target, records)
        # The model card reads the converter's summary beside the training file: say where it is.
        write_json(output_dir / f"{target.stem}.source.json", {"source": str(path.resolve()), "records": len(records)})
    return target


# --------------------------------------------------------------------------- GRPO plan
def rollout_plan(path: Path, image_tokens: int, completion: int, prompts_per_step: int) -> dict:
    """What the data asks of a GRPO run: its records, the most images one prompt carries and the
    longest prompt plus a full completion in tokens (vLLM's ``max_model_len``: without it vLLM
    sizes its cache for the model's whole context). Stops when one optimizer step wants more
    distinct prompts than the data has: the sampler then yields no full batch and the run
    trains 0 steps yet exits 0 (trl's RepeatSampler keeps only full groups of prompts)."""
    rows = _records(path, "training data")
    images = [len(r.get("images") or []) if isinstance(r.get("images"), list) else 0 for _, r in rows]
    prompt_tokens = [n * image_tokens + math.ceil(sum(len(str(m.get("content", "")).encode("utf-8"))
                                                      for m in r["messages"] if isinstance(m, dict)
                                                      and m.get("role") != "assistant") / 2) + TEMPLATE_TOKENS
                     for n, (_, r) in zip(images, rows)]
    if prompts_per_step > len(rows):
        raise UsageError(f"GRPO would train 0 steps: each step samples {prompts_per_step} distinct prompts "
                         f"(GLOBAL_BATCH / NUM_GENERATIONS) but {path} has {len(rows)} record(s); "
                         f"lower GLOBAL_BATCH to at most {len(rows)} x NUM_GENERATIONS, or use more data")
    return {"records": len(rows), "max_images": max(images), "longest_prompt": max(prompt_tokens),
            "max_model_len": math.ceil((max(prompt_tokens) + completion) / 256) * 256}


def _loss_type_literals(source: str) -> set[str]:
    """String constants compared with ``loss_type`` (``== 'x'``, ``in ['x', ...]``) or listed in a
    ``*LOSS_TYPES`` constant, in a module's source."""
    found: set[str] = set()

    def strings(node) -> set[str]:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else [node]
        return {n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = [n for n in [node.left, *node.comparators] if isinstance(n, (ast.Name, ast.Attribute))]
            if any((n.attr if isinstance(n, ast.Attribute) else n.id) == "loss_type" for n in names):
                for comparator in [node.left, *node.comparators]:
                    found |= strings(comparator)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("LOSS_TYPES")
                                                  for t in node.targets):
            found |= strings(node.value)
    return found


def loss_types(kind: str) -> list[str]:
    """The loss types ms-swift's installed trainer for ``kind`` (grpo | dpo) handles, read from its
    source (ms-swift keeps no list of them: its GRPO loss is a chain of ``loss_type ==``
    branches; the DPO one is trl's ``dpo_loss`` as ms-swift overrides it), so a newer ms-swift's
    types (4.6 added ``fipo``) are accepted without a release here. The package is located, not
    imported (seconds saved)."""
    spec = importlib.util.find_spec("swift")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("ms-swift is not installed: cannot read its loss types")
    source = Path(list(spec.submodule_search_locations)[0]) / "rlhf_trainers" / f"{kind}_trainer.py"
    try:
        found = _loss_type_literals(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        raise UsageError(f"cannot read ms-swift's {kind} loss types from {source}: {exc}") from None
    return sorted(found)


def check_loss_type(kind: str, value: str) -> None:
    known = loss_types(kind)
    if value not in known:
        raise UsageError(f"LOSS_TYPE must be one of {', '.join(known)} for {kind.upper()} (as the installed "
                         f"ms-swift handles them), got '{value}'")


# --------------------------------------------------------------------------- rewards
def registered_rewards(plugin: Path | None) -> dict:
    """ms-swift's ORM registry after importing ``plugin`` the way ``--external_plugins`` does."""
    from swift.rewards import orms

    if plugin is not None:
        if not plugin.is_file():
            raise UsageError(f"reward plugin not found: {plugin}")
        spec = importlib.util.spec_from_file_location(f"medswift_plugin_{plugin.stem}", plugin)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return orms


def check_rewards(names: list[str], weights: list[str], plugin: Path | None, registry: bool = True) -> dict | None:
    """Stop unless every name is a registered reward and the weights fit; returns ms-swift's
    registry (``registry``), or None when only the check was asked for and every name is one the
    toolkit's plugin registers (``rewards.REWARD_NAMES``): then ms-swift is not imported (seconds)."""
    if not names:
        raise UsageError("REWARD_FUNCS is empty: name at least one reward")
    if weights and len(weights) != len(names):
        raise UsageError(f"REWARD_WEIGHTS has {len(weights)} value(s) for {len(names)} reward(s) "
                         f"({' '.join(names)}): give one weight per reward, or none")
    for w in weights:
        try:
            value = float(w)
        except ValueError:
            raise UsageError(f"REWARD_WEIGHTS must be numbers, got '{w}'") from None
        if not 0 <= value < math.inf:  # nan, inf (1e400 too) and negatives: a reward no one can read
            raise UsageError(f"REWARD_WEIGHTS must be finite numbers of 0 or more, got '{w}'")
    if weights and not any(float(w) > 0 for w in weights):
        raise UsageError(f"REWARD_WEIGHTS are all 0 ({' '.join(weights)}): every completion would score the same")
    from medswift.posttrain.rewards import REWARD_NAMES, length_band, uncertain_policy

    uncertain_policy()  # MEDSWIFT_REWARD_UNCERTAIN and MEDSWIFT_REWARD_LENGTH_BAND: read by the rewards in
    length_band()  # ms-swift's processes, after the model has loaded; checked here first

    if not registry and plugin is not None and plugin.name == "medswift_rewards.py" and plugin.is_file() \
            and set(names) <= set(REWARD_NAMES):
        return None
    orms = registered_rewards(plugin)
    unknown = [n for n in names if n not in orms]
    if unknown:
        where = f"the plugin {plugin} or ms-swift" if plugin else "ms-swift (no plugin file)"
        raise UsageError(f"reward {unknown[0]!r} is not registered by {where}; known: {', '.join(sorted(orms))}")
    return orms


def score(completions: list[str], references: list[str], names: list[str], weights: list[float],
          orms: dict) -> list[float]:
    """The weighted sum of the named rewards, called as ms-swift's GRPO trainer calls them
    (``reward(completions, solution=[...])``); a reward's None (no opinion) counts as 0."""
    total = [0.0] * len(completions)
    for name, weight in zip(names, weights):
        values = orms[name]()(completions, solution=references)
        total = [t + weight * (v if v is not None else 0.0) for t, v in zip(total, values)]
    return total


# --------------------------------------------------------------------------- DPO pairs
def sample_input(path: Path, num_samples: int, output: Path) -> int:
    """Each record ``num_samples`` times, ids ``<id>#<k>``, for batch_infer at a temperature."""
    if num_samples < 2:
        raise UsageError(f"NUM_SAMPLES must be 2 or more to compare samples, got {num_samples}")
    rows = []
    for n, row in _records(path, "training data"):
        if reference_of(row) is None:
            raise UsageError(f"{path} line {n}: no reference report (DPO pairs are scored against it)")
        rid = str(row.get("id") if row.get("id") is not None else f"line{n}")
        rows += [{**row, "id": f"{rid}{SAMPLE_SEP}{k}"} for k in range(num_samples)]
    write_jsonl(output, rows)
    return len(rows)


def build_pairs(samples: Path, names: list[str], weights: list[float], orms: dict, chosen: str = "best") -> tuple[list, dict]:
    """(DPO records, counts) from batch_infer's rows of ``sample_input``'s file."""
    if chosen not in ("best", "reference"):
        raise UsageError(f"CHOSEN must be best or reference, got {chosen!r}")
    rows, problems = read_jsonl(samples, "samples file")
    if problems:
        raise UsageError(f"{samples} {problems[0]}")
    studies: dict[str, list[dict]] = defaultdict(list)
    for _, row in rows:
        if isinstance(row, dict) and not row.get("control") and isinstance(row.get("id"), str) and SAMPLE_SEP in row["id"]:
            studies[row["id"].rsplit(SAMPLE_SEP, 1)[0]].append(row)
    if not studies:
        raise UsageError(f"{samples} holds no sampled reports (ids <id>{SAMPLE_SEP}<k> from sample_input)")
    # A sample cut by the length limit, or an empty one, is not a report: pairing a full reference
    # against it would teach "finish your sentence", not the reward. Dropped and counted.
    everything = [r for group in studies.values() for r in group]
    cut = sum(r.get("finish_reason") == "length" for r in everything)
    def has_text(r: dict) -> bool:  # a blank or non-text answer teaches DPO nothing, as chosen or rejected
        return isinstance(r.get("response"), str) and bool(r["response"].strip())

    empty = sum(r.get("finish_reason") != "length" and not has_text(r) for r in everything)
    studies = {k: [r for r in g if r.get("finish_reason") != "length" and has_text(r)]
               for k, g in studies.items()}
    kept = {k: g for k, g in studies.items() if g}
    no_sample = len(studies) - len(kept)
    if not kept:
        raise UsageError(f"{samples}: every sample is empty or cut by the length limit ({cut} cut, {empty} empty); "
                         "raise MAX_COMPLETION_LENGTH")
    studies = kept
    flat = [r for group in studies.values() for r in group]
    rewards = score([r.get("response") or "" for r in flat], [r["reference"] for r in flat], names, weights, orms)
    for r, value in zip(flat, rewards):
        r["_reward"] = value
    reference_reward = dict(zip(studies, score([g[0]["reference"] for g in studies.values()],
                                               [g[0]["reference"] for g in studies.values()], names, weights, orms)))
    pairs, ties, single = [], 0, 0
    for study, group in studies.items():
        if len(group) < (2 if chosen == "best" else 1):
            single += 1
            continue
        ranked = sorted(group, key=lambda r: r["_reward"])
        worst = ranked[0]
        if chosen == "best":
            best_text, best_reward = ranked[-1]["response"], ranked[-1]["_reward"]
        else:
            best_text, best_reward = worst["reference"], reference_reward[study]
        if best_reward <= worst["_reward"] or best_text == worst["response"]:
            ties += 1
            continue
        pairs.append({"study": study, "prompt": worst["prompt"], "images": worst["images"], "chosen": best_text,
                      "rejected": worst["response"], "chosen_reward": best_reward, "rejected_reward": worst["_reward"]})
    counts = {"studies": len(studies) + no_sample, "samples": len(everything), "pairs": len(pairs),
              "ties_dropped": ties, "single_sample_dropped": single, "cut_samples_dropped": cut,
              "empty_samples_dropped": empty, "studies_without_a_whole_sample": no_sample,
              "chosen": chosen, "reward_funcs": names, "reward_weights": weights,
              "mean_sample_reward": sum(rewards) / len(rewards)}
    return pairs, counts


def dpo_records(pairs: list[dict]) -> list[dict]:
    """ms-swift's DPO form for a VLM: the user turn with its images, the chosen report as the
    assistant turn, the rejected one as ``rejected_response``."""
    return [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}],
             "images": p["images"], "rejected_response": p["rejected"], "id": p["study"],
             "chosen_reward": round(p["chosen_reward"], 4), "rejected_reward": round(p["rejected_reward"], 4)}
            for p in pairs]


PAIR_ROLES = ("system", "user", "assistant")
MAX_PAIR_IMAGES = 8  # images per pair, the converters' default ceiling (llamafactory --max_images)


def pair_problem(row) -> str | None:
    """Why one PAIRS_FILE record would fail in ms-swift (which drops it, or the whole file, with a
    traceback after the model has loaded), or None. Content is never quoted: only its kind."""
    if not isinstance(row, dict):
        return "not a JSON object"
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in PAIR_ROLES:
            return f"messages[{i}] must have a role of {', '.join(PAIR_ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content must be text, got {type(message.get('content')).__name__}"
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "the last message must be the chosen answer (role assistant, non-empty text)"
    if not any(m["role"] == "user" for m in messages):
        return "no user message"
    rejected = row.get("rejected_response")
    if not isinstance(rejected, str) or not rejected.strip():
        return "rejected_response must be non-empty text"
    if rejected.strip() == messages[-1]["content"].strip():
        return "the chosen and rejected answers are the same text (no preference to learn)"
    return images_problem(row.get("images", []), sum(m["content"].count("<image>") for m in messages))


def images_problem(images, tags: int) -> str | None:
    """Why a pair's ``images`` field does not fit its ``<image>`` tags or the disk, or None."""
    if not isinstance(images, list) or not all(isinstance(image, str) and image for image in images):
        return f"images must be a list of file paths, got {type(images).__name__}"
    if len(images) > MAX_PAIR_IMAGES:
        return f"{len(images)} images; at most {MAX_PAIR_IMAGES} per pair"
    if tags and tags != len(images):
        return f"{tags} <image> tags for {len(images)} images"
    missing = next((k for k, image in enumerate(images) if not Path(image).is_file()), None)
    if missing is not None:
        return f"images[{missing}] is not a file (missing, or a folder)"
    return None


def check_pairs(path: Path) -> int:
    """A user's PAIRS_FILE must be in the rejected_response form, each record one ms-swift can train on:
    stops at the first bad line, naming it and what is wrong, before any model loads."""
    rows, problems = read_jsonl(path, "pairs file")
    if problems:
        raise UsageError(f"{path} {problems[0]}")
    if not rows:
        raise UsageError(f"pairs file is empty: {path}")
    for n, row in rows:
        problem = pair_problem(row)
        if problem:
            raise UsageError(f"{path} line {n}: not a preference pair ({problem}); each record needs messages "
                             "ending with the chosen assistant turn, images, and a different rejected_response")
    return len(rows)


# --------------------------------------------------------------------------- command line
def _split(value: str) -> list[str]:
    return value.replace(",", " ").split()


def main(argv: list[str] | None = None) -> int:
    p = command_parser(__doc__, prog="python -m medswift.posttrain.datasets")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grpo_view", help="write the GRPO view (solution column) of a converter JSONL")
    g.add_argument("--input", required=True)
    g.add_argument("--output_dir", required=True)
    g.add_argument("--dry_run", action="store_true", help="check and print the path, write nothing")
    c = sub.add_parser("check_rewards", help="stop unless every reward name is registered")
    c.add_argument("names", nargs="*")
    c.add_argument("--weights", default="")
    c.add_argument("--plugin")
    s = sub.add_parser("sample_input", help="each record NUM_SAMPLES times, for batch_infer")
    s.add_argument("--input", required=True)
    s.add_argument("--num_samples", type=int, required=True)
    s.add_argument("--output", required=True)
    r = sub.add_parser("pairs", help="score the samples and write DPO pairs")
    r.add_argument("--samples", required=True)
    r.add_argument("--output", required=True)
    r.add_argument("--reward_funcs", required=True)
    r.add_argument("--reward_weights", default="")
    r.add_argument("--plugin")
    r.add_argument("--chosen", default="best", choices=("best", "reference"))
    r.add_argument("--source", help="the converter JSONL the samples came from (named for the model card)")
    k = sub.add_parser("check_pairs", help="stop unless a PAIRS_FILE is in the rejected_response form")
    k.add_argument("path")
    n = sub.add_parser("plan", help="GRPO: records, images per prompt, vLLM max_model_len (shell assignments)")
    n.add_argument("--input", required=True)
    n.add_argument("--image_tokens", type=int, required=True)
    n.add_argument("--completion", type=int, required=True, help="MAX_COMPLETION_LENGTH")
    n.add_argument("--prompts_per_step", type=int, required=True, help="GLOBAL_BATCH / NUM_GENERATIONS")
    t = sub.add_parser("loss_types", help="the loss types the installed ms-swift handles; with a value, check it")
    t.add_argument("kind", choices=("grpo", "dpo"))
    t.add_argument("value", nargs="?")
    args = p.parse_args(argv)

    def body() -> int:
        if args.command == "grpo_view":
            print(grpo_view(Path(args.input), Path(args.output_dir), write=not args.dry_run))
        elif args.command == "check_rewards":
            check_rewards(args.names, _split(args.weights), Path(args.plugin) if args.plugin else None, registry=False)
        elif args.command == "sample_input":
            n = sample_input(Path(args.input), args.num_samples, Path(args.output))
            print(f"{n} requests ({args.num_samples} per study) in {args.output}", file=sys.stderr)
        elif args.command == "pairs":
            names, weights = _split(args.reward_funcs), _split(args.reward_weights)
            orms = check_rewards(names, weights, Path(args.plugin) if args.plugin else None)
            pairs, counts = build_pairs(Path(args.samples), names, [float(w) for w in weights] or [1.0] * len(names),
                                        orms, args.chosen)
            out = Path(args.output)
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
            write_json(out.with_suffix(".summary.json"), counts)
            if not pairs:
                raise UsageError(f"no preference pairs: in all {counts['studies']} studies the chosen report did not "
                                 f"beat the worst sample (ties dropped: {counts['ties_dropped']}); sample more "
                                 "(NUM_SAMPLES, TEMPERATURE) or set CHOSEN=reference")
            write_jsonl(out, dpo_records(pairs))
            if args.source:  # the model card reads the converter's summary beside the source
                write_json(out.with_name(f"{out.stem}.source.json"),
                           {"source": str(Path(args.source).resolve()), "records": len(pairs)})
            print(f"{counts['pairs']} pairs from {counts['studies']} studies x {counts['samples'] // counts['studies']} "
                  f"samples (ties dropped {counts['ties_dropped']}; samples cut by the length limit dropped "
                  f"{counts['cut_samples_dropped']}, empty dropped {counts['empty_samples_dropped']}; "
                  f"chosen = {args.chosen}; mean sample reward "
                  f"{counts['mean_sample_reward']:.3f}) -> {out}", file=sys.stderr)
        elif args.command == "plan":
            plan = rollout_plan(Path(args.input), args.image_tokens, args.completion, args.prompts_per_step)
            print(" ".join(f"PLAN_{k.upper()}={v}" for k, v in plan.items()))
        elif args.command == "loss_types":
            if args.value is None:
                print(" ".join(loss_types(args.kind)))
            else:
                check_loss_type(args.kind, args.value)
        elif args.command == "check_pairs":
            print(f"{check_pairs(Path(args.path))} pairs in {args.path}", file=sys.stderr)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
