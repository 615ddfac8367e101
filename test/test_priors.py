"""Longitudinal samples (--priors, --context) on a MIMIC-CXR-JPG miniature in PhysioNet's layout with
dates: Libra's prior rule (latest study of the patient from a strictly earlier date; one day's studies
share one prior), the prior's frontal view last, its report in a marked section of the user turn,
matching <image> tags, prior_study_id and days_since_prior, splits by patient, plain errors for
readers without dates. No model is loaded here."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from helpers import REPORTS, mimic_dicom_id, read_jsonl, write_mimic_cxr
from medswift.core import prompts
from medswift.data.converters import reports as conv
from medswift.data.pipeline import studies


def report(findings: str | None, impression: str, indication: str = "___M with dyspnea.") -> str:
    text = (" FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  " + indication + "\n \n"
            " TECHNIQUE:  Chest PA and lateral.\n \n COMPARISON:  ___.\n \n")
    if findings is not None:
        text += f" FINDINGS: \n \n {findings}\n \n"
    return text + f" IMPRESSION: \n \n {impression}\n"


def study(subject, number, split, views, date, time, findings, impression="See findings.", **extra):
    return {"subject": subject, "study": number, "split": split, "views": views, "date": date, "time": time,
            "report": report(findings, impression, **extra)}


# Patient A (train): four studies, two on 2180-01-15 (8 a.m. and 5:30 p.m.), which share the prior of
# 2180-01-01; the study of 2180-02-01 takes the later of the two same-day studies.
# Patient B (validate): one study, no prior. Patient C (test): a lateral-only study cannot serve as a
# prior (no frontal view), so its successor has none and the third takes the second; patient D (test):
# an impression-only report is a prior (its impression in the prompt) though it is no sample itself.
STUDIES = [
    study("10000032", "50000004", "train", ["PA"], "21800201", "90000.000", "Effusion has resolved."),
    study("10000032", "50000001", "train", ["LATERAL", "PA"], "21800101", "100000.5", "Small left pleural effusion.",
          "Left effusion."),
    study("10000032", "50000003", "train", ["PA", "LL"], "21800115", "173000.25", "Effusion is smaller."),
    study("10000032", "50000002", "train", ["AP"], "21800115", "80000.000", "Stable small effusion.",
          indication="___M, portable, line placement."),
    study("10000764", "57000001", "validate", ["PA", "LATERAL"], "21790303", "121212.0", "Lungs are clear."),
    study("10000898", "58000001", "test", ["LATERAL"], "21500101", "101010.0", "Lateral view only."),
    study("10000898", "58000002", "test", ["AP"], "21500301", "101010.0", "New right lower lobe opacity."),
    study("10000898", "58000003", "test", ["AP"], "21500310", "91010.0", "The opacity has improved."),
    study("11000011", "51000001", "test", ["PA"], "21600101", "120000.0", None, "Mild cardiomegaly."),
    study("11000011", "51000002", "test", ["PA"], "21600111", "120000.0", "Heart size is stable."),
]
EXPECTED = {  # study -> (its prior, days since it)
    "s50000001": (None, None), "s50000002": ("s50000001", 14), "s50000003": ("s50000001", 14),
    "s50000004": ("s50000003", 17), "s57000001": (None, None), "s58000002": (None, None),
    "s58000001": (None, None), "s58000003": ("s58000002", 9), "s51000002": ("s51000001", 10),
}


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> tuple[Path, Path]:
    return write_mimic_cxr(tmp_path_factory.mktemp("mimic_dated"), STUDIES)


def convert(root: Path, reports: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--input", str(root), "--reports_dir", str(reports), "--output_dir", str(out), "--lang", "en",
            "--quiet", "--workers", "1", *extra]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = conv.main(argv)
    return rc, stdout.getvalue(), stderr.getvalue()


def rows(out: Path) -> dict[str, tuple[str, dict]]:
    return {s["id"]: (split, s) for split in ("train", "val", "test") for s in read_jsonl(out / f"{split}.jsonl")}


def image_of(number: str, view: int) -> str:
    return f"s{number}/{mimic_dicom_id(f'{number}/{view}')}.jpg"


def test_every_study_gets_its_prior_by_the_rule(mimic, tmp_path):
    root, reports = mimic
    rc, stdout, stderr = convert(root, reports, tmp_path / "priors", "--priors")
    assert rc == 0, stderr
    written = rows(tmp_path / "priors")
    assert {rid: (s["prior_study_id"], s["days_since_prior"]) for rid, (_, s) in written.items()} == EXPECTED
    # current views first (frontal first), the prior's frontal view last; one <image> tag per image
    expected_images = {
        "s50000001": [image_of("50000001", 1), image_of("50000001", 0)],
        "s50000002": [image_of("50000002", 0), image_of("50000001", 1)],
        "s50000003": [image_of("50000003", 0), image_of("50000003", 1), image_of("50000001", 1)],
        "s50000004": [image_of("50000004", 0), image_of("50000003", 0)],
        "s58000003": [image_of("58000003", 0), image_of("58000002", 0)],
        "s51000002": [image_of("51000002", 0), image_of("51000001", 0)],
    }
    for rid, names in expected_images.items():
        sample = written[rid][1]
        assert ["/".join(Path(p).parts[-2:]) for p in sample["images"]] == names, rid
        user = sample["messages"][0]["content"]
        assert user.startswith("<image>" * len(names)) and user.count("<image>") == len(sample["images"])
    # the prior's findings and impression sit in the marked section of the user turn, never the current ones
    user = written["s50000002"][1]["messages"][0]["content"]
    block = user.split("[PRIOR REPORT]\n", 1)[1].split("\n[END OF PRIOR REPORT]", 1)[0]
    assert block == "Findings: Small left pleural effusion.\nImpression: Left effusion."
    assert "Stable small effusion" not in user and "14 days earlier" in user and "the last image" in user
    assert "frontal chest radiograph" in user
    impression_only = written["s51000002"][1]["messages"][0]["content"]
    assert "[PRIOR REPORT]\nImpression: Mild cardiomegaly.\n[END OF PRIOR REPORT]" in impression_only
    # a study without a prior gets today's prompt, word for word
    rc, _, _ = convert(root, reports, tmp_path / "plain")
    plain = rows(tmp_path / "plain")
    for rid in ("s50000001", "s57000001", "s58000002"):
        assert written[rid][1]["messages"] == plain[rid][1]["messages"], rid
        assert written[rid][1]["images"] == plain[rid][1]["images"]
    assert "prior_study_id" not in plain["s50000002"][1], "records carry prior fields only with --priors"
    # splits stay by patient and a prior never crosses one
    assert {rid: split for rid, (split, _) in written.items()} == {
        "s50000001": "train", "s50000002": "train", "s50000003": "train", "s50000004": "train",
        "s57000001": "val", "s58000001": "test", "s58000002": "test", "s58000003": "test", "s51000002": "test"}
    skipped = (tmp_path / "priors" / "skipped.tsv").read_text()
    assert "s51000001\tno findings section" in skipped
    warnings = (tmp_path / "priors" / "warnings.tsv").read_text()
    assert "s58000002\tprior s58000001 unusable" in warnings and "no prior" in warnings
    summary = json.loads((tmp_path / "priors" / "summary.json").read_text())
    assert summary["priors"]["with_prior"] == 5 and summary["priors"]["without_prior"] == 4
    assert summary["images_per_record"] == {"1": 2, "2": 6, "3": 1}
    assert "Effusion" not in stdout + stderr and "p1000" not in stdout


def test_context_adds_indication_technique_comparison_never_findings(mimic, tmp_path):
    root, reports = mimic
    rc, _, stderr = convert(root, reports, tmp_path / "ctx", "--priors", "--context", "--section", "impression")
    assert rc == 0, stderr
    written = rows(tmp_path / "ctx")
    user = written["s50000002"][1]["messages"][0]["content"]
    current = user.split("[CURRENT STUDY]\n", 1)[1]
    assert current == "Indication: ___M, portable, line placement.\nTechnique: Chest PA and lateral.\nComparison: ___."
    assert "Stable small effusion" not in user  # the current findings never reach the prompt
    assert written["s50000002"][1]["messages"][1]["content"] == "See findings."  # --section impression
    # impression-only studies are samples now; a lone study keeps today's request, plus its context
    assert written["s51000001"][1]["prior_study_id"] is None
    lone = written["s57000001"][1]["messages"][0]["content"]
    assert "[PRIOR REPORT]" not in lone and "[CURRENT STUDY]\nIndication:" in lone
    assert json.loads((tmp_path / "ctx" / "summary.json").read_text())["priors"]["context"] is True
    # --context alone: today's request and the current context, no prior fields
    rc, _, stderr = convert(root, reports, tmp_path / "ctx_only", "--context")
    assert rc == 0, stderr
    only = rows(tmp_path / "ctx_only")["s50000002"][1]
    assert "prior_study_id" not in only and len(only["images"]) == 1
    assert only["messages"][0]["content"] == "<image>" + prompts.longitudinal_prompt(
        "en", prompts.pick_index("s50000002", 42, "en"), 1, ["AP"],
        context={"indication": "___M, portable, line placement.", "technique": "Chest PA and lateral.",
                 "comparison": "___."})


def test_a_seeded_split_keeps_patients_and_their_priors_together(mimic, tmp_path):
    root, reports = mimic
    rc, _, stderr = convert(root, reports, tmp_path / "seeded", "--priors", "--split", "seeded", "--val_ratio", "0.3",
                            "--test_ratio", "0.3", "--seed", "3")
    assert rc == 0, stderr
    written = rows(tmp_path / "seeded")
    split_of = {rid: split for rid, (split, _) in written.items()}
    assert {s["prior_study_id"] for _, s in written.values()} - {None} <= set(split_of) | {"s51000001"}
    for rid, (split, sample) in written.items():
        prior = sample["prior_study_id"]
        assert prior is None or split_of.get(prior, split) == split, (rid, prior)
    assert len({split_of[f"s5000000{k}"] for k in range(1, 5)}) == 1  # one patient, one split
    assert len(set(split_of.values())) > 1


def test_prior_prompts_in_both_languages_name_views_and_prior():
    for lang in prompts.LANGUAGES:
        assert len(prompts.PRIOR_TEMPLATES[lang]) == 12
        for k in range(12):
            prior = {"findings": "A.", "impression": ""}
            text = prompts.longitudinal_prompt(lang, k, 2, ["PA", "LATERAL"], prior=prior, days=3)
            assert ("frontal and lateral chest radiographs" if lang == "en" else "正位和侧位") in text
            assert ("prior study's frontal" if lang == "en" else "前次检查的胸部正位") in text
            assert ("3 days earlier" if lang == "en" else "3天前") in text
            assert text.count("[") == 2 and "A." in text and "Impression" not in text
    assert prompts.longitudinal_prompt("en", 4, 1, ["AP"]) == prompts.study_template("en", 4, 1, ["AP"])
    assert "current frontal chest radiograph," in prompts.longitudinal_prompt("en", 4, 1, ["AP"], prior={}, days=1)


def test_link_priors_same_day_share_and_time_order():
    """The rule on its own: same-day studies share the prior; times compare as numbers (MIMIC writes
    StudyTime without its leading zero, so text order would put 9 a.m. after 10 a.m.)."""
    from medswift.data.pipeline.records import Candidate

    def rec(rid, day, time):
        return Candidate(rid, [f"{rid}.jpg"], group="p1", fields={
            "study_day": day, "study_time": time, "impression": "x", "view_positions": ["PA"]})

    records = [rec("s3", 10, 9 * 3600), rec("s1", 5, 10 * 3600), rec("s2", 5, 9 * 3600), rec("s4", 10, 8 * 3600)]
    images = {r.record_id: [f"/x/{r.record_id}.jpg"] for r in records}
    prior_of, notes = studies.link_priors(records, images, [], lambda r: "train")
    assert {k: v and (v.study, v.days) for k, v in prior_of.items()} == {
        "s1": None, "s2": None, "s3": ("s1", 5), "s4": ("s1", 5)} and notes == []


def test_readers_without_dates_say_so(mimic, tmp_path):
    root, reports = mimic
    cases = [
        (["--input", str(REPORTS["en"]), "--images_dir", str(REPORTS["en"].parent / "images"), "--priors"],
         "the openi format has none (IU-Xray/OpenI reports carry no date"),
        (["--input", str(REPORTS["en"]), "--context"], "--context needs indication/technique/comparison"),
        (["--input", str(root), "--reports_dir", str(reports), "--priors", "--unit", "image"],
         "--priors links studies; use --unit study"),
    ]
    for k, (argv, message) in enumerate(cases):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = conv.main(argv + ["--output_dir", str(tmp_path / f"o{k}"), "--quiet"])
        lines = stderr.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def test_a_study_without_a_date_is_a_listed_skip(tmp_path):
    dated = [study("10000032", "50000001", "train", ["PA"], "21800101", "100000.0", "Clear."),
             study("10000032", "50000002", "train", ["PA"], "2180-01-02", "100000.0", "Clear.")]
    root, reports = write_mimic_cxr(tmp_path / "m", dated)
    rc, _, stderr = convert(root, reports, tmp_path / "out", "--priors")
    assert rc == 0, stderr
    skipped = (tmp_path / "out" / "skipped.tsv").read_text()
    assert f"{mimic_dicom_id('50000002/0')}\tno study date\ts50000002: no valid StudyDate/StudyTime" in skipped
