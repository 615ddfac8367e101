"""The one input contract of every GRPO reward: what a trainer may hand a reward, read as text.

Research only, not diagnosis. scripts/swift_plugins/medswift_rewards.py applies ``text_inputs`` to
each reward it registers, so that every reward follows the same rule:

* a completion or solution is read as text when it is a string; ``None`` is an empty answer;
  a list of chat messages whose last one is the assistant's (TRL's conversational format) is
  that message's content; a list of content parts (``[{"type": "text", "text": ...}]``, the
  form ms-swift keeps for multimodal messages: ``messages[-1]["content"]``) is its text parts
  joined. ms-swift 4.6 passes ``messages[-1]["content"]`` of each sample (a string for this
  toolkit's datasets).
* anything else (an int, bytes, a dict, token ids, a list of messages ending with the user's)
  is not text: it scores 0, and a warning counts such inputs (their type, never their content).
* a ``solution`` list whose length differs from the completions' is refused with one
  ``ValueError`` line (zip would silently drop completions, or score them against the wrong
  reference).
"""
from __future__ import annotations

import functools
import logging

from medswift.core.errors import UsageError

logger = logging.getLogger("medswift.rewards")


def as_text(value) -> str | None:
    """The text of one completion or solution, or None when it holds no text (see the module's rule)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(item, dict) for item in value):
        return None
    if "role" in value[-1]:  # chat messages: the answer is the last one, the assistant's
        last = value[-1]
        return as_text(last.get("content")) if last.get("role") == "assistant" else None
    texts = [part.get("text") for part in value if part.get("type") == "text"]
    if not texts or not all(isinstance(text, str) for text in texts):
        return None
    return "\n".join(texts)


def checked_inputs(name: str, completions, solution, needs_solution: bool):
    """``(texts, references)``: lists of equal length, None where an input holds no text; or one error."""
    if not isinstance(completions, (list, tuple)):
        raise ValueError(f"{name}: completions must be a list, got {type(completions).__name__}")
    if solution is None:
        if needs_solution:
            raise UsageError(f"{name} needs the reference in a 'solution' column of the dataset")
        return [as_text(c) for c in completions], [None] * len(completions)
    if not isinstance(solution, (list, tuple)) or len(solution) != len(completions):
        given = f"{len(solution)} solutions" if isinstance(solution, (list, tuple)) else type(solution).__name__
        raise ValueError(f"{name}: {len(completions)} completions but {given}; the dataset's 'solution' column "
                         "must give one reference per completion")
    return [as_text(c) for c in completions], [as_text(s) for s in solution]


def text_inputs(name: str, needs_solution: bool = False):
    """Decorator for a reward's ``__call__(self, completions, solution=None, **kwargs)``: it is called
    with the completions and solutions that are text only, as strings; the others score 0 (counted)."""

    def decorate(call):
        @functools.wraps(call)
        def checked(self, completions, solution=None, **kwargs):
            texts, refs = checked_inputs(name, completions, solution, needs_solution)
            usable = [i for i, (text, ref) in enumerate(zip(texts, refs))
                      if text is not None and (ref is not None or solution is None)]
            scores = [0.0] * len(texts)
            if usable:
                values = call(self, [texts[i] for i in usable],
                              solution=None if solution is None else [refs[i] for i in usable], **kwargs)
                for i, value in zip(usable, values):
                    scores[i] = value
            not_text = len(texts) - len(usable)
            if not_text:
                self.not_text = getattr(self, "not_text", 0) + not_text
                kinds = sorted({type(v).__name__ for v, t in zip(completions, texts) if t is None}
                               | {type(v).__name__ for v, r in zip(solution or [], refs) if r is None})
                logger.warning("%s: %d completions (%d so far) or their solutions are not text (%s); scored 0",
                               name, not_text, self.not_text, ", ".join(kinds))
            return scores

        return checked

    return decorate
