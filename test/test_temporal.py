"""Change language (medswift/eval/temporal.py) and the report card's temporal section: change words
in families, negation-aware, English and Chinese; matching change scores above contradicting change;
predictions that describe change without a prior study are counted."""
from __future__ import annotations

import json

import pytest

from helpers import write_rows
from medswift.eval import report_card, temporal


@pytest.mark.parametrize("text, families", [
    ("The left effusion has increased. No new opacity.", {"worsened"}),
    ("No interval change.", {"stable"}),
    ("Not significantly changed since the prior study.", {"stable"}),
    ("Stable cardiomegaly. New right lower lobe opacity.", {"new", "stable"}),
    ("The pneumothorax is no longer seen.", {"resolved"}),
    ("Heart size is normal. No pneumothorax.", set()),
    ("No evidence of worsening, the consolidation is improving.", {"improved"}),
    ("右下肺新发斑片影，左侧胸腔积液较前增多。", {"new", "worsened"}),
    ("与前片比较无明显变化。", {"stable"}),
    ("未见新发病灶。", set()),
    ("气胸已消失。", {"resolved"}),
    ("右肺渗出较前好转。", {"improved"}),
    ("心影增大。", set()),  # a finding (cardiomegaly), not a change
])
def test_change_families_negation_aware_in_both_languages(text, families):
    assert temporal.change_families(text) == frozenset(families)


def test_matching_change_scores_above_contradicting_change():
    references = ["The right effusion has increased.", "Stable mild cardiomegaly.", "New left basal opacity.",
                  "左侧胸腔积液较前减少。"]
    matching = ["Right pleural effusion is larger, worsened.", "Cardiomegaly is unchanged.",
                "There is a new opacity at the left base.", "左侧胸腔积液较前好转。"]
    contradicting = ["The right effusion has decreased.", "Cardiomegaly has worsened.",
                     "The left basal opacity has resolved.", "左侧胸腔积液较前增多。"]
    silent = ["Right effusion.", "Cardiomegaly.", "Left basal opacity.", "左侧胸腔积液。"]
    good, bad, none = (temporal.scores(references, preds) for preds in (matching, contradicting, silent))
    assert good["f1"] == 1.0 and bad["f1"] == 0.0 and none["f1"] == 0.0
    assert good["per_family"]["worsened"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "in_references": 1,
                                              "in_predictions": 1}
    assert bad["per_family"]["improved"]["precision"] == 0.0 and bad["predictions_with_change"] == 4
    # neither side speaks of change: nothing to score, said as None rather than a perfect score
    assert temporal.scores(["Normal chest."], ["No acute process."])["f1"] is None


def test_change_without_a_prior_is_counted():
    preds = ["Effusion has increased.", "Normal chest.", "Stable heart size.", "Effusion has increased."]
    result = temporal.scores(["Effusion."] * 4, preds, [False, False, True, None])
    assert (result["rows_without_prior"], result["change_without_prior"], result["rows_prior_unknown"]) == (2, 1, 1)
    assert result["change_without_prior_share"] == 0.5


def test_report_card_writes_the_temporal_section(tmp_path):
    rows = [
        {"key": "a", "response": "The right effusion has increased.", "reference": "Right effusion, increased.",
         "prior_given": True},
        {"key": "b", "response": "Stable cardiomegaly.", "reference": "Cardiomegaly is unchanged.",
         "prior_given": True},
        {"key": "c", "response": "New left opacity.", "reference": "Left opacity.", "prior_given": False},
        {"key": "d", "response": "心影较前无明显变化。", "reference": "心影大小同前。", "prior_given": False},
    ]
    preds = write_rows(tmp_path / "change.jsonl", rows)
    m = report_card.evaluate(preds, tmp_path / "card", n_boot=0, workers=1)
    saved = json.loads((tmp_path / "card" / "metrics.json").read_text())["temporal"]
    assert saved == json.loads(json.dumps(m["temporal"]))
    assert saved["f1"] == pytest.approx(6 / 7)  # a, b, d match; c claims "new" its reference does not state
    assert (saved["rows_without_prior"], saved["change_without_prior"]) == (2, 2)
    card = (tmp_path / "card" / "report.md").read_text()
    assert "## Change over time (temporal, rule-based)" in card and "2 of 2 predictions made without a prior" in card
