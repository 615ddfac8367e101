"""Report-level text metrics: BLEU-1..4, ROUGE-L, CIDEr (both languages), METEOR (English),
each with a 95% bootstrap interval.

The scorers are pycocoevalcap's, the captioning field's reference implementation;
only the tokenisation is chosen here (``--protocol``):

* ``default``, English: pycocoevalcap's PTB tokenizer (lower-cased, punctuation removed);
  METEOR runs its bundled Java jar (Java 8+ needed).
* ``default``, Chinese, primary: characters. Every CJK character is a token, Latin words and
  numbers stay whole, punctuation is dropped. Independent of any segmenter, so
  scores compare across papers and tools.
* ``default``, Chinese, secondary: jieba word segmentation (its default dictionary), which
  rewards getting whole medical terms right.
* ``r2gen`` (English only): R2Gen's report cleaning (medswift/eval/r2gen_cleaning.py), whitespace
  tokens, references cut as R2Gen cuts its ground truths; the scorers get the cleaned
  strings directly, as R2Gen's compute_scores does.

(``rouge-score``'s default tokenizer deletes every CJK character, so Chinese would
score 0 there; that is why it is not used.) METEOR has no Chinese resources, so it
is reported for English only.

Large files: BLEU's n-gram counting, ROUGE-L and CIDEr run in worker processes
(medswift/eval/scorer_workers.py) while the METEOR jar scores in this one; METEOR may be limited
to a seeded sample of records (``meteor_sample``), said in metrics.json and the card.
"""
from __future__ import annotations

import atexit
import re
import shutil
import threading
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from medswift.core.errors import UsageError
from medswift.eval import bootstrap, r2gen_cleaning
from medswift.eval.scorer_workers import Workers, gather

EMPTY = "<empty>"  # stands in for an empty prediction: it matches nothing, so every score is 0
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|[A-Za-z]+(?:['\-][A-Za-z]+)*|\d+(?:\.\d+)?")
PROTOCOLS = ("default", "r2gen")
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")


def is_chinese(text: str) -> bool:
    return re.search(rf"[{_CJK}]", text) is not None


def detect_lang(texts: list[str]) -> str:
    """'zh' when most texts contain CJK characters, else 'en'."""
    zh = sum(1 for t in texts if is_chinese(t))
    return "zh" if zh * 2 >= max(len(texts), 1) and zh else "en"


def _is_punct(token: str) -> bool:
    return all(unicodedata.category(ch).startswith(("P", "S", "Z")) or ch.isspace() for ch in token)


def tokenize_zh_chars(text: str) -> str:
    return " ".join(_CHAR_TOKEN.findall(unicodedata.normalize("NFKC", text).lower()))


def tokenize_zh_jieba(text: str) -> str:
    import jieba

    jieba.setLogLevel(60)  # silence "Building prefix dict" on stderr
    words = jieba.lcut(unicodedata.normalize("NFKC", text).lower())
    return " ".join(w.strip() for w in words if w.strip() and not _is_punct(w))


def require_java() -> None:
    if shutil.which("java") is None:
        raise UsageError("English scoring needs Java 8+ (pycocoevalcap's PTB tokenizer and METEOR): "
                         "install a JRE, e.g. apt-get install default-jre-headless")


def tokenize_en(texts: dict[str, str]) -> dict[str, str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    tokenized = PTBTokenizer().tokenize({k: [{"caption": v}] for k, v in texts.items()})
    return {k: v[0] for k, v in tokenized.items()}


TOKENISATIONS = {"zh": ("char", "jieba"), "en": ("ptb",)}


def schemes(lang: str, protocol: str = "default") -> tuple[str, ...]:
    """The tokenisations a record of ``lang`` is scored with; the first is its primary one."""
    return ("r2gen",) if protocol == "r2gen" else TOKENISATIONS[lang]


def tokenize_all(texts: dict[str, str], scheme: str, r2gen_style: str = "iu_xray",
                 max_tokens: int | None = None) -> dict[str, str]:
    """``max_tokens`` (r2gen only) cuts each text after that many tokens, as R2Gen cuts references."""
    if scheme == "ptb":
        out = tokenize_en(texts)
    elif scheme == "char":
        out = {k: tokenize_zh_chars(v) for k, v in texts.items()}
    elif scheme == "jieba":
        out = {k: tokenize_zh_jieba(v) for k, v in texts.items()}
    elif scheme == "r2gen":
        out = {k: " ".join(r2gen_cleaning.tokens(v, r2gen_style, max_tokens)) if v.strip() else "" for k, v in texts.items()}
    else:
        raise ValueError(f"unknown tokenisation {scheme!r}")
    return {k: v if v.strip() else EMPTY for k, v in out.items()}


# --------------------------------------------------------------------------- scorers (worker side)
def _bleu_comps(pairs: list[tuple[str, str]]) -> list[dict]:
    """pycocoevalcap's per-record BLEU statistics (BleuScorer.ctest) for (hypothesis, reference) pairs."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=bootstrap.BLEU_N)
    for hyp, ref in pairs:
        scorer += (hyp, [ref])
    return scorer.ctest


def _rouge_scores(pairs: list[tuple[str, str]]) -> list[float]:
    from pycocoevalcap.rouge.rouge import Rouge

    rouge = Rouge()
    return [float(rouge.calc_score([hyp], [ref])) for hyp, ref in pairs]


def _cider(gts: list[str], res: list[str]) -> tuple[float, np.ndarray]:
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider().compute_score({i: [g] for i, g in enumerate(gts)}, {i: [r] for i, r in enumerate(res)})
    return float(score), np.asarray(scores, dtype=np.float64)


def corpus_bleu(comps: list[dict]) -> tuple[list[float], list[list[float]]]:
    """pycocoevalcap's own corpus BLEU-1..4 and per-record BLEU over already counted statistics."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=bootstrap.BLEU_N)
    scorer.ctest = comps  # counted in the workers; compute_score only reads ctest
    score, per_record = scorer.compute_score(option="closest", verbose=0)
    return [float(s) for s in score], per_record


# --------------------------------------------------------------------------- METEOR
def _meteor_text(text: str) -> str:
    # one line per segment, "|||" separates fields in the jar's protocol (the library only
    # cleans the hypothesis; a reference with a newline or "|||" would desynchronise it)
    return " ".join(text.replace("|||", " ").split()) or EMPTY


class MeteorJar:
    """pycocoevalcap's METEOR process, asked for per-record statistics and for corpus scores
    of (summed) statistics: its EVAL command sums the statistics it is given and scores the
    sum, so a bootstrap resample is one summed line and the jar's own scoring.

    Requests are the ones pycocoevalcap's ``Meteor._stat``/``compute_score`` send, but written
    from a thread while this one reads the replies: a round trip per record (the library's
    way) left 5,000 records waiting on two context switches each, most of a 10,000-row card
    on a busy machine."""

    def __init__(self):
        from pycocoevalcap.meteor.meteor import Meteor

        require_java()
        self._meteor = Meteor()

    def alive(self) -> bool:
        return getattr(self, "_meteor", None) is not None and self._meteor.meteor_p.poll() is None

    def _ask(self, requests: list[str], replies: list[int]) -> list[list[str]]:
        """Send ``requests`` (one line each) and read ``replies[i]`` lines back for request i."""
        proc = self._meteor.meteor_p

        def write():
            try:
                for line in requests:
                    proc.stdin.write(line.encode("utf-8") + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):  # the jar died: the reader sees end of file
                pass

        with self._meteor.lock:
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            out = []
            for k in replies:
                lines = [proc.stdout.readline().decode("utf-8").strip() for _ in range(k)]
                if not all(lines):
                    raise RuntimeError("the METEOR jar stopped answering (java out of memory?)")
                out.append(lines)
            writer.join()
        return out

    def stats(self, pairs: list[tuple[str, str]]) -> list[str]:
        """Per-record METEOR statistics of (hypothesis, reference) pairs."""
        requests = [f"SCORE ||| {_meteor_text(ref)} ||| {_meteor_text(hyp)}" for hyp, ref in pairs]
        return [r[0] for r in self._ask(requests, [1] * len(requests))]

    def evaluate(self, stat_lines: list[str]) -> tuple[list[float], float]:
        """Per-line scores and the corpus score of ``stat_lines`` (as Meteor.compute_score)."""
        (reply,) = self._ask(["EVAL ||| " + " ||| ".join(stat_lines)], [len(stat_lines) + 1])
        return [float(x) for x in reply[:-1]], float(reply[-1])

    def corpus_scores(self, summed: np.ndarray) -> list[float]:
        """The jar's score of each row of summed statistics (``meteor_additive``), one EVAL per
        row; its first reply line, the line's own score (the second would run addStats again)."""
        requests = ["EVAL ||| " + " ".join(repr(float(x)) for x in row) for row in summed]
        return [float(r[0]) for r in self._ask(requests, [2] * len(requests))]

    def close(self) -> None:
        if getattr(self, "_meteor", None) is not None:
            self._meteor = None  # pycocoevalcap's __del__ stops the JVM


# A METEOR 1.5 statistics line: test/reference length, test/reference function words, then per
# matcher stage (4) test/reference content and test/reference function matches, then chunks and
# test/reference word matches.
_METEOR_STAGES, _METEOR_CHUNKS, _METEOR_WIDTH = 4, 20, 23


def meteor_additive(lines: list[str]) -> np.ndarray:
    """Per-record METEOR statistics whose column sums are what the jar's EVAL aggregates:
    MeteorStats.addStats adds every field except the chunk count of a record matched completely
    in one chunk, so that chunk is zeroed here."""
    stats = np.array([[float(x) for x in line.split()] for line in lines], dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != _METEOR_WIDTH:
        raise RuntimeError(f"unexpected METEOR statistics ({stats.shape[-1]} fields, expected {_METEOR_WIDTH})")
    stage = stats[:, 4:4 + 4 * _METEOR_STAGES].reshape(len(stats), _METEOR_STAGES, 4)
    test_matches = stage[:, :, 0].sum(1) + stage[:, :, 2].sum(1)
    ref_matches = stage[:, :, 1].sum(1) + stage[:, :, 3].sum(1)
    whole = (test_matches == stats[:, 0]) & (ref_matches == stats[:, 1]) & (stats[:, _METEOR_CHUNKS] == 1)
    stats[whole, _METEOR_CHUNKS] = 0
    return stats


_SHARED_JAR: MeteorJar | None = None


def meteor_jar() -> MeteorJar:
    """This process's METEOR jar, started on first use and kept: the JVM spends seconds loading
    its paraphrase tables, so a process scoring several files or tokenisations pays that once.
    Creating it returns at once; the tables load while the caller does other work."""
    global _SHARED_JAR
    if _SHARED_JAR is None or not _SHARED_JAR.alive():
        _SHARED_JAR = MeteorJar()
    return _SHARED_JAR


@atexit.register
def close_meteor_jar() -> None:
    """Stop this process's METEOR JVM (also done at exit)."""
    global _SHARED_JAR
    if _SHARED_JAR is not None:
        _SHARED_JAR.close()
        _SHARED_JAR = None


def meteor_score(gts: list[str], res: list[str], n_boot: int = 0, seed: int = 0, jar: MeteorJar | None = None) -> dict:
    """Corpus METEOR, per-record scores and (n_boot > 0) a 95% interval, all from the jar."""
    jar = jar or meteor_jar()
    try:
        lines = jar.stats(list(zip(res, gts)))
        per_record, corpus = jar.evaluate(lines)
        ci = None
        if n_boot:
            sums = bootstrap.resample_sums(meteor_additive(lines), n_boot, seed)
            ci = bootstrap.percentile_interval(np.array(jar.corpus_scores(sums)))
    except BaseException:
        jar.close()  # a reply left half read would be the next caller's answer
        raise
    return {"corpus": corpus, "per_record": per_record, "ci95": ci}


# --------------------------------------------------------------------------- one tokenisation
@dataclass
class Pending:
    """A tokenisation whose scorers are running in the workers."""
    ids: list[str]
    gts: list[str]
    res: list[str]
    lang: str
    scheme: str
    bleu: list = field(default_factory=list)
    rouge: list = field(default_factory=list)
    cider: object = None
    meteor: MeteorJar | None = None


def start(references: dict[str, str], predictions: dict[str, str], lang: str, scheme: str, pool: Workers, *,
          r2gen_style: str = "iu_xray", reference_max_tokens: int | None = None,
          timings: dict | None = None) -> Pending:
    """Tokenise (here) and hand BLEU counting, ROUGE-L and CIDEr to ``pool``."""
    if set(references) != set(predictions) or not references:
        raise ValueError("references and predictions must share the same, non-empty set of ids")
    # first: the JVM loads its paraphrase tables (seconds) while tokenising and the rest run
    jar = meteor_jar() if lang == "en" else None
    t0 = time.perf_counter()
    ids = sorted(references)
    gts = tokenize_all({i: references[i] for i in ids}, scheme, r2gen_style, reference_max_tokens)
    res = tokenize_all({i: predictions[i] for i in ids}, scheme, r2gen_style)
    p = Pending(ids, [gts[i] for i in ids], [res[i] for i in ids], lang, scheme, meteor=jar)
    _add(timings, f"tokenise {scheme}", t0)
    t0 = time.perf_counter()
    p.cider = pool.submit(_cider, p.gts, p.res)  # the one indivisible task: first in the queue
    pairs = list(zip(p.res, p.gts))
    p.bleu = pool.map_chunks(_bleu_comps, pairs)
    p.rouge = pool.map_chunks(_rouge_scores, pairs)
    _add(timings, f"BLEU/ROUGE-L/CIDEr {scheme} (here when serial, else handed to the workers)", t0)
    return p


def finish(p: Pending, *, n_boot: int = 0, seed: int = 0, meteor_sample: int = 0,
           timings: dict | None = None) -> dict:
    """Corpus scores, per-record ROUGE-L/BLEU-4, 95% intervals (``n_boot`` > 0).

    Returns ``{"corpus", "per_sample": {id: {"rouge_l", "bleu_4"}}, "ci95", "n", "meteor_n"}``."""
    n = len(p.ids)
    corpus, ci, meteor_n = {}, {}, None
    if p.lang == "en":  # the jar scores here while the workers count n-grams
        t0 = time.perf_counter()
        chosen = np.arange(n)
        if meteor_sample and n > meteor_sample:
            chosen = np.sort(np.random.default_rng(seed).choice(n, meteor_sample, replace=False))
        met = meteor_score([p.gts[i] for i in chosen], [p.res[i] for i in chosen], n_boot, seed, p.meteor)
        meteor_n = len(chosen)
        _add(timings, f"METEOR {p.scheme} ({meteor_n} records, jar)", t0)
    t0 = time.perf_counter()
    comps = gather(p.bleu)
    rouge_each = np.array(gather(p.rouge), dtype=np.float64)
    cider, cider_each = p.cider.result()
    _add(timings, f"wait for BLEU/ROUGE-L/CIDEr {p.scheme} (workers)", t0)
    bleu, bleu_each = corpus_bleu(comps)
    corpus.update({f"bleu_{k + 1}": bleu[k] for k in range(bootstrap.BLEU_N)})
    if p.lang == "en":
        corpus["meteor"] = float(met["corpus"])
    corpus.update(rouge_l=float(np.mean(rouge_each)), cider=cider)  # pycocoevalcap's means
    if n_boot:
        t0 = time.perf_counter()
        mean = (lambda sums, n: sums / n)  # noqa: E731
        ci = bootstrap.intervals(
            {"bleu": bootstrap.bleu_stats(comps), "rouge_l": rouge_each, "cider": cider_each},
            {"bleu": ([f"bleu_{k + 1}" for k in range(bootstrap.BLEU_N)], lambda sums, n: bootstrap.bleu_from_stats(sums)),
             "rouge_l": (["rouge_l"], mean), "cider": (["cider"], mean)}, n_boot, seed)
        if p.lang == "en":
            ci["meteor"] = met["ci95"]
        ci = {m: ci[m] for m in METRICS if m in ci}
        _add(timings, f"bootstrap {p.scheme}", t0)
    per_sample = {i: {"rouge_l": float(rouge_each[k]), "bleu_4": float(bleu_each[3][k])} for k, i in enumerate(p.ids)}
    return {"corpus": {m: corpus[m] for m in METRICS if m in corpus}, "per_sample": per_sample, "ci95": ci,
            "n": n, "meteor_n": meteor_n}


def score(references: dict[str, str], predictions: dict[str, str], lang: str, scheme: str, *,
          n_boot: int = 0, seed: int = 0, meteor_sample: int = 0, r2gen_style: str = "iu_xray",
          reference_max_tokens: int | None = None) -> dict:
    """Corpus scores and per-sample ROUGE-L / BLEU-4 for one tokenisation, in this process."""
    with Workers(1) as pool:
        pending = start(references, predictions, lang, scheme, pool, r2gen_style=r2gen_style,
                        reference_max_tokens=reference_max_tokens)
        return finish(pending, n_boot=n_boot, seed=seed, meteor_sample=meteor_sample)


def _add(timings: dict | None, name: str, since: float) -> None:
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - since
