"""IU-Xray as the NLM publishes it (ecgen-radiology/*.xml + NLMCXR_png/): studies, sections, MeSH
meta, every skip reason, hostile XML (entity bombs, external entities, huge or non-regular files),
detection, byte-identical re-runs. No model is loaded here."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from helpers import BUNDLED_IMAGES, PYTHON, ROOT, read_jsonl, run
from medswift.data.readers import iu_xray
from medswift.data.converters import reports as conv


def report_xml(uid: str, findings: str | None, impression: str | None, images: list[str],
               major: list[str], minor: list[str] = (), body_extra: str = "", doctype: str = "") -> str:
    """One report in the NLM's layout (element names and nesting of ecgen-radiology/<n>.xml);
    ``None`` leaves a section out, ``""`` writes it empty as the NLM does for missing ones."""
    def section(label, text):
        if text is None:
            return ""
        return f'<AbstractText Label="{label}">{text}</AbstractText>' if text else f'<AbstractText Label="{label}"/>'
    parents = "".join(f"""
   <parentImage id="{image}">
      <figureId>F{k}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/{image}.jpg</url><imgModality>7</imgModality></panel>
   </parentImage>""" for k, image in enumerate(images, start=1))
    mesh = "".join(f"<major>{t}</major>" for t in major) + "".join(f"<minor>{t}</minor>" for t in minor)
    number = uid.removeprefix("CXR")
    return f"""<?xml version="1.0" encoding="utf-8"?>{doctype}
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <pmcId id="{number}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{number}"/>
   <licenseType>open-access</licenseType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old male, chest pain.</AbstractText>
            {section("FINDINGS", findings)}
            {section("IMPRESSION", impression)}
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}<automatic>ignored automatic term</automatic></MeSH>{body_extra}{parents}
</eCitation>
"""


def entity_bomb(levels: int) -> str:
    """Nested entities: 10**levels copies of a short text in FINDINGS (levels 9: the billion laughs)."""
    ents = ['<!ENTITY e0 "XXXX lol ">'] + [f'<!ENTITY e{i} "{("&e%d;" % (i - 1)) * 10}">' for i in range(1, levels + 1)]
    return report_xml("CXR70", f"&e{levels};", "Normal.", ["CXR70_IM-0000-1001"], ["normal"],
                      doctype="\n<!DOCTYPE eCitation [\n" + "\n".join(ents) + "\n]>")


GOOD_IMAGES = ["CXR1_1_IM-0001-4001", "CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR2_IM-0652-2001",
               "CXR2_IM-0652-3001", "CXR3_IM-1384-1001", "CXR4_IM-2050-1001", "CXR4_IM-2050-2001",
               "CXR10_IM-0003-1001", "CXR70_IM-0000-1001"]


@pytest.fixture(scope="module")
def nlm(tmp_path_factory) -> tuple[Path, Path]:
    """``NLMCXR_reports/ecgen-radiology/*.xml`` and ``NLMCXR_png/*.png`` with good studies of 1-3
    views and one study for each way a report can be unusable."""
    root = tmp_path_factory.mktemp("nlm")
    png = root / "NLMCXR_png"
    png.mkdir()
    base = Image.open(BUNDLED_IMAGES / "2_1.png").convert("L").resize((64, 64))
    for k, name in enumerate(GOOD_IMAGES):
        base.rotate(k).save(png / f"{name}.png")
    reports = root / "NLMCXR_reports"
    xml = reports / "ecgen-radiology"
    xml.mkdir(parents=True)
    files = {
        # two views, listed lateral-numbered first: the order given is kept
        "1.xml": report_xml("CXR1", "The cardiac silhouette is normal. There are no XXXX of a pleural effusion.",
                            "Normal chest x-XXXX.", GOOD_IMAGES[0:2], ["normal"]),
        "2.xml": report_xml("CXR2", "Borderline cardiomegaly. Midline sternotomy XXXX.", "No acute pulmonary disease.",
                            GOOD_IMAGES[2:5], ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
                            ["Lung/hypoinflation"]),
        "3.xml": report_xml("CXR3", "", "No active disease.", GOOD_IMAGES[5:6], ["normal"]),  # empty FINDINGS
        "4.xml": report_xml("CXR4", "Lungs are clear bilaterally.", None, GOOD_IMAGES[6:8], ["normal"]),  # no IMPR.
        "5.xml": report_xml("CXR5", "Clear lungs.", "Normal.", [], ["normal"]),  # no parentImage
        "6.xml": report_xml("CXR6", "Cut short.", "Normal.", ["CXR6_IM-0000-1001"], ["normal"])[:400],  # malformed
        "7.xml": entity_bomb(4),  # 90 KB of expansion: below expat's own guard, stopped by defusedxml
        "8.xml": report_xml("CXR8", "&ext;", "Normal.", ["CXR8_IM-0000-1001"], ["normal"],
                            doctype='\n<!DOCTYPE eCitation [<!ENTITY ext SYSTEM "file:///etc/hostname">]>'),
        "9.xml": report_xml("CXR9", "Stable chest.", "Normal.", ["CXR9_IM-0404-1001"], ["normal"]),  # PNG absent
        "10.xml": report_xml("CXR10", "Hyperexpanded lungs.", "COPD.", [GOOD_IMAGES[8], "CXR10_IM-0003-2001"],
                             ["Pulmonary Disease, Chronic Obstructive"]),  # second view absent
        "11.xml": report_xml("CXR1", "Another report under a uId already used.", "Normal.",
                             ["CXR11_IM-0001-1001"], ["normal"]),
        "13.xml": entity_bomb(9),  # the billion laughs
        "14.xml": report_xml("CXR14", "Padded. " * 140_000, "Normal.", ["CXR14_IM-0000-1001"], ["normal"]),  # > 1 MiB
    }
    for name, text in files.items():
        (xml / name).write_text(text, encoding="utf-8")
    (xml / "16.xml").write_bytes(report_xml("CXR16", "Heart \xff\xfe size.", "Normal.", [], ["normal"])
                                 .encode("latin-1"))  # declared UTF-8, is not
    os.mkfifo(xml / "15.xml")  # opening it would block the run
    (xml / "README.txt").write_text("not a report")
    return reports, png


def convert(nlm, out: Path, *extra: str) -> tuple[int, str]:
    reports, png = nlm
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = conv.main(["--input", str(reports), "--images_dir", str(png), "--output_dir", str(out),
                        "--lang", "en", "--quiet", *extra])
    return rc, buf.getvalue().splitlines()[0]


def by_id(out: Path) -> dict[str, tuple[str, dict]]:
    return {s["id"]: (split, s) for split in ("train", "val", "test") for s in read_jsonl(out / f"{split}.jsonl")}


def skipped(out: Path) -> set[tuple[str, str]]:
    return {tuple(r.split("\t")[:2]) for r in (out / "skipped.tsv").read_text().splitlines()[1:]}


UNREADABLE = {("6", "unreadable XML"), ("7", "unreadable XML"), ("8", "unreadable XML"), ("13", "unreadable XML"),
              ("14", "unreadable XML"), ("15", "unreadable XML"), ("16", "unreadable XML")}


def test_study_unit_findings_mesh_and_every_skip(nlm, tmp_path):
    out = tmp_path / "out"
    rc, line = convert(nlm, out)
    assert rc == 0
    assert line == ("read 15 = written 4 (train 2, val 1, test 1) + skipped 11 (duplicate id 1, missing image 1, "
                    "no findings section 1, no image 1, unreadable XML 7); "
                    "2 warnings (written, listed in warnings.tsv)")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["format"], summary["unit"], summary["split"], summary["section"]) == \
        ("iu_xray", "study", "seeded", "findings")
    assert summary["read"] == summary["written"] + summary["skipped"]
    assert summary["xml_files"] == 14 and summary["images_per_record"] == {"1": 1, "2": 3}
    assert skipped(out) == UNREADABLE | {("CXR1", "duplicate id"), ("CXR9", "missing image"),
                                         ("CXR3", "no findings section"), ("CXR5", "no image")}
    rows = by_id(out)
    assert set(rows) == {"CXR1", "CXR2", "CXR4", "CXR10"}
    png = nlm[1]
    _, cxr1 = rows["CXR1"]
    # the views in the order the XML lists them (no PA/lateral tag to sort by), one <image> tag each
    assert cxr1["images"] == [str((png / f"{n}.png").resolve()) for n in GOOD_IMAGES[0:2]]
    assert cxr1["messages"][0]["content"].startswith("<image><image>")
    assert cxr1["messages"][1]["content"] == \
        "The cardiac silhouette is normal. There are no XXXX of a pleural effusion."  # XXXX kept
    assert cxr1["meta"] == {"uid": "CXR1", "mesh_major": ["normal"], "mesh_minor": []}
    _, cxr2 = rows["CXR2"]
    assert [Path(p).stem for p in cxr2["images"]] == GOOD_IMAGES[2:4]
    assert cxr2["meta"] == {"uid": "CXR2", "mesh_major": ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
                            "mesh_minor": ["Lung/hypoinflation"]}
    assert [Path(p).stem for p in rows["CXR10"][1]["images"]] == [GOOD_IMAGES[8]]
    warnings = (out / "warnings.tsv").read_text().splitlines()[1:]
    assert warnings == ["CXR10\tview CXR10_IM-0003-2001 refused (missing image); the study keeps its other views",
                        "CXR2\tview CXR2_IM-0652-3001 not used (--max_views 2)"]
    details = {r.split("\t")[0]: r.split("\t")[2] for r in (out / "skipped.tsv").read_text().splitlines()[1:]}
    assert "EntitiesForbidden" in details["7"] and "EntitiesForbidden" in details["13"]
    assert "EntitiesForbidden" in details["8"] and "larger than" in details["14"]
    assert "not a regular file" in details["15"] and "ParseError" in details["6"]


def test_entity_expansion_never_reaches_a_target(nlm, tmp_path):
    """The 90 KB bomb (7.xml) would parse with plain ElementTree (under expat's own amplification
    guard) and become a training target; defusedxml refuses the declaration."""
    out = tmp_path / "out"
    convert(nlm, out, "--unit", "image")
    texts = [s["messages"][-1]["content"] for _, s in by_id(out).values()]
    assert texts and all("lol" not in t and len(t) < 200 for t in texts)
    assert not any(rid.startswith("CXR70") for rid in by_id(out))


@pytest.mark.parametrize("section, written, missing, target", [
    ("impression", {"CXR1", "CXR2", "CXR3", "CXR10"}, ("CXR4", "no impression section"),
     ("CXR3", "No active disease.")),
    ("both", {"CXR1", "CXR2", "CXR3", "CXR4", "CXR10"}, None,
     ("CXR1", "Findings: The cardiac silhouette is normal. There are no XXXX of a pleural effusion.\n"
              "Impression: Normal chest x-XXXX.")),
])
def test_sections(nlm, tmp_path, section, written, missing, target):
    out = tmp_path / "out"
    rc, _ = convert(nlm, out, "--section", section)
    assert rc == 0
    rows = by_id(out)
    assert set(rows) == written
    assert rows[target[0]][1]["messages"][-1]["content"] == target[1]
    if section == "both":
        assert rows["CXR3"][1]["messages"][-1]["content"] == "Impression: No active disease."
        assert rows["CXR4"][1]["messages"][-1]["content"] == "Findings: Lungs are clear bilaterally."
    # a study without the chosen section is skipped once, under its study id
    reasons = {r for _, r in skipped(out)}
    assert (missing in skipped(out)) if missing else not any(r.startswith("no ") and "section" in r for r in reasons)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["section"] == section and summary["read"] == summary["written"] + summary["skipped"]


def test_image_unit_keeps_a_study_on_one_side(nlm, tmp_path):
    out = tmp_path / "out"
    rc, line = convert(nlm, out, "--unit", "image", "--val_ratio", "0.3", "--test_ratio", "0.3")
    assert rc == 0
    assert line.startswith("read 20 = written 8 ") and "skipped 12 (" in line
    assert "missing image 2" in line
    rows = by_id(out)
    assert set(rows) == set(GOOD_IMAGES[0:5] + GOOD_IMAGES[6:9])
    sides: dict[str, set[str]] = {}
    for rid, (split, sample) in rows.items():
        assert len(sample["images"]) == 1 and Path(sample["images"][0]).stem == rid
        sides.setdefault(sample["meta"]["uid"], set()).add(split)
    assert all(len(s) == 1 for s in sides.values()) and len(set().union(*sides.values())) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "image" and summary["max_views"] == 1


def test_byte_identical_rerun_in_another_process(nlm, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    convert(nlm, first)
    reports, png = nlm
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(reports / "ecgen-radiology"),
         "--images_dir", str(png), "--output_dir", str(second), "--lang", "en", "--quiet"],
        env={"PYTHONHASHSEED": "777"})
    names = ("train.jsonl", "val.jsonl", "test.jsonl", "skipped.tsv", "warnings.tsv")
    assert {n: (first / n).read_bytes() for n in names} == {n: (second / n).read_bytes() for n in names}
    a, b = (json.loads((d / "summary.json").read_text()) for d in (first, second))
    assert a["content_sha256"] == b["content_sha256"] and a["written"] == 4


def test_detection_and_user_mistakes(nlm, tmp_path, capsys):
    reports, png = nlm
    xml = reports / "ecgen-radiology"
    assert iu_xray.detect(reports) and iu_xray.detect(xml) and iu_xray.detect(xml / "1.xml")
    loose = tmp_path / "loose"  # XMLs in a folder of another name are found by their content
    loose.mkdir()
    (loose / "1.xml").write_bytes((xml / "1.xml").read_bytes())
    assert iu_xray.detect(loose)
    assert not iu_xray.detect(png) and not iu_xray.detect(ROOT / "data" / "openi" / "openi-en.json")
    assert not iu_xray.detect(tmp_path / "absent") and not iu_xray.detect(xml / "15.xml")  # the FIFO
    assert conv.pick_reader(type("A", (), {"input": str(reports), "format": None})).NAME == "iu_xray"
    out = tmp_path / "one"
    assert conv.main(["--input", str(xml / "1.xml"), "--images_dir", str(png), "--output_dir", str(out),
                      "--quiet", "--val_ratio", "0", "--test_ratio", "0"]) == 0
    assert [s["id"] for s in read_jsonl(out / "train.jsonl")] == ["CXR1"]
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [(["--split", "official"], "no official split"),
                          (["--input", str(empty), "--format", "iu_xray"], "holds no report XML files"),
                          (["--images_dir", str(tmp_path / "nope")], "images folder not found")]:
        base = {"--input": str(reports), "--images_dir": str(png)}
        base.update(dict(zip(args[::2], args[1::2])))
        rc = conv.main([x for kv in base.items() for x in kv] + ["--output_dir", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], (args, err)


def test_symlink_loops_are_listed_skips(nlm, tmp_path):
    """Issue 16: a looping link among the XMLs or the PNGs aborted the conversion (0 written): one
    listed skip each instead."""
    reports, png = nlm
    xml = tmp_path / "ecgen-radiology"
    xml.mkdir()
    (xml / "1.xml").write_bytes((reports / "ecgen-radiology" / "1.xml").read_bytes())
    (xml / "loop.xml").symlink_to("loop.xml")
    images = tmp_path / "png"
    images.mkdir()
    for image in png.iterdir():
        (images / image.name).write_bytes(image.read_bytes())
    (images / "loop.png").symlink_to("loop.png")
    out = tmp_path / "out"
    assert conv.main(["--input", str(xml), "--images_dir", str(images), "--output_dir", str(out), "--quiet",
                      "--lang", "en", "--val_ratio", "0", "--test_ratio", "0"]) == 0
    assert set(by_id(out)) == {"CXR1"}
    assert skipped(out) == {("loop", "unreadable XML")}
    assert "loop.xml: symlink loop" in (out / "skipped.tsv").read_text()
