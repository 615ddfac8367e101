"""Report-level text metrics: BLEU-1..4, ROUGE-L, CIDEr (both languages), METEOR (English).

The scorers are pycocoevalcap's, the captioning field's reference implementation;
only the tokenisation is chosen here:

* English: pycocoevalcap's PTB tokenizer (lower-cased, punctuation removed); METEOR
  runs its bundled Java jar (Java 8+ needed).
* Chinese, primary: characters. Every CJK character is a token, Latin words and
  numbers stay whole, punctuation is dropped. Independent of any segmenter, so
  scores compare across papers and tools.
* Chinese, secondary: jieba word segmentation (its default dictionary), which
  rewards getting whole medical terms right.

(``rouge-score``'s default tokenizer deletes every CJK character, so Chinese would
score 0 there; that is why it is not used.) METEOR has no Chinese resources, so it
is reported for English only.
"""
from __future__ import annotations

import re
import shutil
import unicodedata

from medswift.core.errors import UsageError

EMPTY = "<empty>"  # stands in for an empty prediction: it matches nothing, so every score is 0
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|[A-Za-z]+(?:['\-][A-Za-z]+)*|\d+(?:\.\d+)?")


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


def tokenize_all(texts: dict[str, str], scheme: str) -> dict[str, str]:
    if scheme == "ptb":
        out = tokenize_en(texts)
    elif scheme == "char":
        out = {k: tokenize_zh_chars(v) for k, v in texts.items()}
    elif scheme == "jieba":
        out = {k: tokenize_zh_jieba(v) for k, v in texts.items()}
    else:
        raise ValueError(f"unknown tokenisation {scheme!r}")
    return {k: v if v.strip() else EMPTY for k, v in out.items()}


def score(references: dict[str, str], predictions: dict[str, str], lang: str, scheme: str) -> dict:
    """Corpus scores and per-sample ROUGE-L / BLEU-4 for one tokenisation.

    Returns ``{"corpus": {...}, "per_sample": {id: {"rouge_l", "bleu_4"}}}``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(predictions) or not references:
        raise ValueError("references and predictions must share the same, non-empty set of ids")
    ids = sorted(references)
    gts = tokenize_all({i: references[i] for i in ids}, scheme)
    res = tokenize_all({i: predictions[i] for i in ids}, scheme)
    gts_l = {i: [gts[i]] for i in ids}
    res_l = {i: [res[i]] for i in ids}
    bleu, bleu_each = Bleu(4).compute_score(gts_l, res_l, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts_l, res_l)
    cider, _ = Cider().compute_score(gts_l, res_l)
    corpus = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
    corpus.update(rouge_l=float(rouge), cider=float(cider))
    if lang == "en":
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()  # starts the Java scorer; it stops when the object is collected
        corpus["meteor"] = float(meteor.compute_score(gts_l, res_l)[0])
        del meteor
    per_sample = {i: {"rouge_l": float(rouge_each[k]), "bleu_4": float(bleu_each[3][k])} for k, i in enumerate(ids)}
    return {"corpus": corpus, "per_sample": per_sample}
