"""MIMIC-CXR-JPG + MIMIC-CXR reports (PhysioNet's layout, written here in miniature): report sections
the way the MIT-LCP section parser cuts them, the official split kept and patient-disjoint, studies
as multi-view samples frontal first, --views, every skip reason, one-line errors, detection, the
command line. No model is loaded here."""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from helpers import MIMIC_METADATA_COLUMNS, MIMIC_SPLIT_COLUMNS, PYTHON, REPORTS, ROOT, read_jsonl, run
from helpers import mimic_dicom_id as dicom_id
from medswift.data.readers import mimic_cxr
from medswift.data.converters import reports as conv

# Reports in the MIMIC-CXR style (a "FINAL REPORT" title, one-space indented lines, "___" where the
# de-identification removed text, blank lines holding one space); written for these tests.
FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with cough and low-grade fever  // eval for pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  Chest radiograph from ___.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is within normal limits.  Mild degenerative
 changes of the thoracic spine.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""
FULL_FINDINGS = ("There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal "
                 "silhouette is within normal limits. Mild degenerative changes of the thoracic spine.")
# A wet read before the final report, a "PORTABLE CHEST" header (a view description: findings),
# a CONCLUSION (an impression) and a typo in a later, empty, repeated header.
WET_READ = """ WET READ: ___ ___ ___ 9:41 PM
  Low lung volumes.  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 HISTORY:  ___-year-old man with chest tube, evaluate for pneumothorax.
 
 PORTABLE CHEST: 
 Left chest tube is in unchanged position.  No pneumothorax.  Lung volumes are
 low with bibasilar atelectasis.
 
 CONCLUSION:  Stable left chest tube without pneumothorax.
 
 IMPRESSON: 
"""
IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  ___M with dyspnea.
 
 COMPARISON:  None.
 
 IMPRESSION: 
 
 Portable AP view of the chest.  Moderate cardiomegaly without edema.
"""
# No FINDINGS or IMPRESSION header: the paragraphs after the last section's first blank line
# stand in for the impression ("last paragraph").
LAST_PARAGRAPH = """                                 FINAL REPORT
 HISTORY:  ___-year-old woman after line placement.
 
 COMPARISON:  Radiograph of ___.
 
 Single portable view of the chest.  The right internal jugular line ends in the
 mid SVC.
 
 Lungs are clear.  No pneumothorax.
"""

# subject, study, official split, views (ViewPosition each, in the split file's order), report:
# text, None (no report file) or bytes (written as they are).
STUDIES = [
    ("10000032", "50414267", "train", ["LATERAL", "PA"], FULL),  # lateral listed first: PA must lead
    ("10000032", "53189527", "train", ["AP"], IMPRESSION_ONLY),
    ("10000032", "53911762", "train", ["AP", "LL"], WET_READ),
    ("10000764", "57375967", "validate", ["PA", "LL"], FULL.replace("thoracic spine", "thoracic spine, stable")),
    ("10000898", "50771383", "test", ["AP"], FULL.replace("Mild", "Moderate")),
    ("10000898", "54205396", "test", ["LATERAL", "AP", "PA"], FULL.replace("Mild", "Minimal")),  # 3 views
    ("11000011", "51000001", "train", ["AP"], LAST_PARAGRAPH),
    ("12000120", "52000001", "train", ["PA"], FULL),  # this patient is in test too (an edited split file)
    ("12000120", "52000002", "test", ["PA"], FULL),
    ("13000001", "53000001", "train", ["PA"], None),  # no report file
    ("13000001", "53000002", "train", ["PA"], b" FINDINGS: caf\xe9 au lait.\n"),  # Latin-1, not UTF-8
    ("13000001", "53000003", "train", ["PA"], FULL),  # its JPEG is garbage
    ("13000001", "53000004", "train", ["PA"], FULL),  # its JPEG is absent
    ("14000001", "54000001", "holdout", ["PA"], FULL),  # a split name that is none of the three
]
GARBLED, ABSENT = dicom_id("53000003/0"), dicom_id("53000004/0")
NOT_LISTED = dicom_id("on disk only")  # a JPEG in a study folder the split file does not list
METADATA_ONLY = dicom_id("metadata only")


def jpeg(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.linear_gradient("L").resize((24, 24)).rotate(17 * k).save(path, format="JPEG", quality=85)


def write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def rel(subject: str, study: str, dicom: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> tuple[Path, Path]:
    """(MIMIC-CXR-JPG root, MIMIC-CXR reports root), as PhysioNet's downloads unpack."""
    base = tmp_path_factory.mktemp("mimic")
    jpg, reports = base / "mimic-cxr-jpg" / "2.0.0", base / "mimic-cxr-reports"
    split_rows, meta_rows, k = [], [], 0
    for subject, study, split, views, report in STUDIES:
        for v, position in enumerate(views):
            dicom = dicom_id(f"{study}/{v}")
            path = jpg / "files" / rel(subject, study, dicom)
            if dicom == GARBLED:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 3)
            elif dicom != ABSENT:
                jpeg(path, k)
            k += 1
            split_rows.append([dicom, study, subject, split])
            meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", position, "3056", "2544", "21800506",
                              "213014.531", "CHEST (PA AND LAT)", "lateral" if "L" in position else
                              "postero-anterior", "Erect"])
        txt = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(report, str):
            txt.write_text(report)
        elif isinstance(report, bytes):
            txt.write_bytes(report)
    split_rows += [
        split_rows[1],  # the PA view of s50414267 again
        ["../../etc/passwd", "5x", "p1", "train"],  # ids that are not MIMIC's
        ["1234abcd"],  # a row cut short
    ]
    jpeg(jpg / "files" / rel("10000032", "50414267", NOT_LISTED), 99)
    meta_rows.append([METADATA_ONLY, "10000032", "50414267", "CHEST (PA AND LAT)", "PA"] + [""] * 7)
    write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_COLUMNS, split_rows)
    write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_COLUMNS, meta_rows)
    return jpg, reports


def convert(root: Path, reports: Path | None, out: Path, *extra: str) -> tuple[int, str, str]:
    """The converter in this process: (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--input", str(root), "--output_dir", str(out), "--lang", "en", "--quiet", "--workers", "1"]
    argv += ["--reports_dir", str(reports)] if reports else []
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = conv.main(argv + list(extra))
    return rc, stdout.getvalue(), stderr.getvalue()


def by_id(out: Path) -> dict[str, tuple[str, dict]]:
    return {s["id"]: (split, s) for split in ("train", "val", "test") for s in read_jsonl(out / f"{split}.jsonl")}


def skip_rows(out: Path) -> dict[str, tuple[str, str]]:
    rows = [r.split("\t") for r in (out / "skipped.tsv").read_text().splitlines()[1:]]
    return {r[0]: (r[1], r[2]) for r in rows}


def patients(sample: dict) -> set[str]:
    return {re.search(r"/(p\d{8})/s\d+/", p).group(1) for p in sample["images"]}


def one_split_per_patient(out: Path) -> dict[str, str]:
    side: dict[str, set[str]] = {}
    for split, sample in by_id(out).values():
        for patient in patients(sample):
            side.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in side.values()), side
    return {p: s.pop() for p, s in side.items()}


# --------------------------------------------------------------------------- sections
def test_sections_as_the_mimic_cxr_section_parser_cuts_them():
    names = [name for name, _ in mimic_cxr.split_sections(FULL)]
    assert names == ["preamble", "examination", "indication", "technique", "comparison", "findings", "impression"]
    assert mimic_cxr.report_sections(FULL) == (FULL_FINDINGS, "No acute cardiopulmonary process.", "impression")
    # wet read kept out; "PORTABLE CHEST" counts as findings, CONCLUSION as the impression, and the
    # empty "IMPRESSON" (a typo the parser knows) does not replace it
    assert [n for n, _ in mimic_cxr.split_sections(WET_READ)] == \
        ["preamble", "wet read", "history", "findings", "impression", "impression"]
    assert mimic_cxr.report_sections(WET_READ) == (
        "Left chest tube is in unchanged position. No pneumothorax. Lung volumes are low with bibasilar "
        "atelectasis.", "Stable left chest tube without pneumothorax.", "impression")
    assert mimic_cxr.report_sections(IMPRESSION_ONLY) == (
        "", "Portable AP view of the chest. Moderate cardiomegaly without edema.", "impression")
    assert mimic_cxr.report_sections(LAST_PARAGRAPH) == (
        "", "Single portable view of the chest. The right internal jugular line ends in the mid SVC. "
            "Lungs are clear. No pneumothorax.", "last paragraph")
    # a later non-empty section of a name wins; CRLF line ends read the same
    twice = FULL.replace(" IMPRESSION:", " FINDINGS:  See below.\n \n IMPRESSION:")
    assert mimic_cxr.report_sections(twice)[0] == "See below."
    assert mimic_cxr.report_sections(FULL.replace("\n", "\r\n")) == mimic_cxr.report_sections(FULL)
    assert mimic_cxr.report_sections("Heart size normal.") == ("", "", "")
    assert mimic_cxr.section_name("FINDINGS AND IMPRESSION") == "impression"
    assert mimic_cxr.section_name("PA AND LATERAL CHEST") == "findings"
    assert mimic_cxr.section_name("REASON FOR EXAM") == "indication"


# --------------------------------------------------------------------------- conversion
def test_official_split_studies_frontal_first_and_every_skip(mimic, tmp_path):
    root, reports = mimic
    out = tmp_path / "out"
    rc, stdout, stderr = convert(root, reports, out)
    assert rc == 0, stderr
    assert stdout.splitlines()[0] == (
        "read 19 = written 6 (train 2, val 1, test 3) + skipped 13 (bad id in the split file 2, duplicate row 1, "
        "missing image 1, missing report 1, no findings section 2, not in the official split 2, "
        "patient in two splits 1, truncated image 1, unknown split 1, unreadable report 1); 1 warnings (written, "
        "listed in warnings.tsv)")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["format"], summary["unit"], summary["split"], summary["section"], summary["views"]) == \
        ("mimic_cxr", "study", "official", "findings", "all")
    assert summary["input_records"] == 24 and summary["read"] == summary["written"] + summary["skipped"]
    rows = by_id(out)
    assert {rid: split for rid, (split, _) in rows.items()} == {
        "s50414267": "train", "s53911762": "train", "s57375967": "val",
        "s50771383": "test", "s54205396": "test", "s52000002": "test"}
    # a study with two views is one sample, PA before the lateral listed first, one <image> tag each
    study = rows["s50414267"][1]
    names = [Path(p).name for p in study["images"]]
    assert names == [f"{dicom_id('50414267/1')}.jpg", f"{dicom_id('50414267/0')}.jpg"]
    assert all(Path(p).is_relative_to(root.resolve() / "files") for p in study["images"])
    assert study["messages"][0]["content"].startswith("<image><image>") and \
        "<image>" not in study["messages"][0]["content"][len("<image>") * 2:]
    assert study["messages"][1]["content"] == FULL_FINDINGS
    assert "frontal and lateral chest radiographs" in study["messages"][0]["content"], "names the views it shows"
    assert study["meta"] == {"view_position": "PA", "impression_from": "impression"}
    assert [Path(p).name for p in rows["s53911762"][1]["images"]] == [f"{dicom_id('53911762/0')}.jpg",
                                                                      f"{dicom_id('53911762/1')}.jpg"]
    three = rows["s54205396"][1]["images"]  # PA, AP, LATERAL by rank; --max_views 2 keeps two
    assert [Path(p).name for p in three] == [f"{dicom_id('54205396/2')}.jpg", f"{dicom_id('54205396/1')}.jpg"]
    assert (out / "warnings.tsv").read_text().splitlines()[1:] == [
        f"s54205396\tview p10/p10000898/s54205396/{dicom_id('54205396/0')}.jpg not used (--max_views 2)"]
    # no patient straddles two splits; the edited split file's train study of a test patient is dropped
    assert one_split_per_patient(out) == {"p10000032": "train", "p10000764": "val", "p10000898": "test",
                                          "p12000120": "test"}
    skips = skip_rows(out)
    assert skips[dicom_id("52000001/0")] == ("patient in two splits",
                                             "p12000120 is also in test in mimic-cxr-2.0.0-split.csv.gz")
    assert skips["s53189527"][0] == skips["s51000001"][0] == "no findings section"
    assert skips[dicom_id("53000001/0")] == ("missing report", "s53000001.txt not in the reports folder")
    assert skips[dicom_id("53000002/0")] == ("unreadable report",
                                             "s53000002.txt: not UTF-8 (byte 0xe9 at offset 14)")
    assert skips["s53000003"][0] == "truncated image"  # a JPEG header and no more: one listed study
    assert skips["s53000004"][0] == "missing image"
    assert skips[dicom_id("54000001/0")] == ("unknown split", "'holdout' in mimic-cxr-2.0.0-split.csv.gz")
    assert skips[dicom_id("50414267/1")][0] == "duplicate row"
    assert skips["../../etc/passwd"][0] == skips["1234abcd"][0] == "bad id in the split file"
    assert skips[NOT_LISTED] == ("not in the official split", f"p10/p10000032/s50414267/{NOT_LISTED}.jpg is not "
                                                              "in mimic-cxr-2.0.0-split.csv.gz")
    assert skips[METADATA_ONLY][0] == "not in the official split"
    # the logs name no report text and no patient beyond the dataset's de-identified ids
    assert "Traceback" not in stderr and "p1000" not in stdout and "cough" not in stdout + stderr


def test_sections_image_unit_views_and_seeded_split(mimic, tmp_path):
    root, reports = mimic
    out = tmp_path / "impression"
    rc, stdout, _ = convert(root, reports, out, "--section", "impression")
    assert rc == 0
    rows = by_id(out)
    assert rows["s53189527"][1]["messages"][1]["content"] == \
        "Portable AP view of the chest. Moderate cardiomegaly without edema."
    assert rows["s51000001"][1]["meta"]["impression_from"] == "last paragraph"
    assert rows["s53911762"][1]["messages"][1]["content"] == "Stable left chest tube without pneumothorax."

    out = tmp_path / "image"  # every view a sample of its own, the two views of a study on one side
    rc, stdout, _ = convert(root, reports, out, "--unit", "image")
    assert rc == 0 and stdout.startswith("read 24 = written 11 (train 4, val 2, test 5) + skipped 13 ")
    rows = by_id(out)
    assert rows[dicom_id("50414267/0")][0] == rows[dicom_id("50414267/1")][0] == "train"
    assert rows[dicom_id("57375967/0")][0] == rows[dicom_id("57375967/1")][0] == "val"
    assert all(len(s["images"]) == 1 for _, s in rows.values())
    one_split_per_patient(out)

    out = tmp_path / "frontal"  # --views frontal: laterals are listed skips, studies keep their PA/AP
    rc, stdout, _ = convert(root, reports, out, "--views", "frontal")
    assert rc == 0
    rows, skips = by_id(out), skip_rows(out)
    assert [Path(p).name for p in rows["s50414267"][1]["images"]] == [f"{dicom_id('50414267/1')}.jpg"]
    assert [Path(p).name for p in rows["s54205396"][1]["images"]] == [f"{dicom_id('54205396/2')}.jpg",
                                                                      f"{dicom_id('54205396/1')}.jpg"]
    assert skips[dicom_id("50414267/0")] == ("view not selected", "ViewPosition LATERAL not in --views frontal")
    assert skips[dicom_id("53911762/1")] == ("view not selected", "ViewPosition LL not in --views frontal")
    assert json.loads((out / "summary.json").read_text())["views"] == ["AP", "PA"]

    out = tmp_path / "seeded"  # a seeded split groups by patient too
    rc, _, _ = convert(root, reports, out, "--split", "seeded", "--val_ratio", "0.3", "--test_ratio", "0.3")
    assert rc == 0
    sides = one_split_per_patient(out)
    assert sorted(sides.values()).count("train") < len(sides)  # something beside train, still per patient
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "seeded" and sum(summary["studies_per_split"].values()) == len(sides)


def test_command_line_detection_and_byte_identical_rerun(mimic, tmp_path):
    root, reports = mimic
    first, second = tmp_path / "a", tmp_path / "b"
    assert mimic_cxr.detect(root) and mimic_cxr.detect(root.parent.parent / "mimic-cxr-jpg" / "2.0.0")
    assert not mimic_cxr.detect(REPORTS["en"]) and not mimic_cxr.detect(tmp_path)
    assert conv.pick_reader(type("A", (), {"input": str(root), "format": None})).NAME == "mimic_cxr"
    assert convert(root, reports, first)[0] == 0
    proc = run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--format", "mimic_cxr",
                "--input", str(root), "--reports_dir", str(reports), "--output_dir", str(second),
                "--lang", "en", "--quiet", "--workers", "1"], env={"PYTHONHASHSEED": "7"})
    assert proc.stdout.startswith("read 19 = written 6 ") and "not for diagnosis" in proc.stdout
    names = ("train.jsonl", "val.jsonl", "test.jsonl", "skipped.tsv", "warnings.tsv")
    assert {n: (first / n).read_bytes() for n in names} == {n: (second / n).read_bytes() for n in names}
    sums = [json.loads((d / "summary.json").read_text()) for d in (first, second)]
    assert sums[0]["content_sha256"] == sums[1]["content_sha256"]
    rerun = convert(root, reports, first)  # into the same folder: image checks come from the cache
    assert rerun[0] == 0 and json.loads((first / "summary.json").read_text())["checks_from_cache"] == 11


def test_bad_input_is_one_error_line(mimic, tmp_path):
    root, reports = mimic
    broken = tmp_path / "broken"
    (broken / "files" / "p10").mkdir(parents=True)
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("dicom_id,study_id,subject_id\nx,1,2\n")
    not_gzip = tmp_path / "split.csv.gz"
    not_gzip.write_bytes(b"dicom_id,study_id,subject_id,split\n")
    # issue 16: one 64 MiB line in a 64 KB gzip was read whole (512 MiB: 1.09 GB) before any check
    long_line = tmp_path / "long.csv.gz"
    with gzip.open(long_line, "wb") as fh:
        fh.write(b"dicom_id,study_id,subject_id,split\n" + b"x" * (64 << 20) + b"\n")
    cases = [
        ([str(root), "--reports_dir", str(reports), "--format", "mimic_cxr"], None),  # the good case, for contrast
        ([str(tmp_path / "nope"), "--format", "mimic_cxr"], "input folder not found"),
        ([str(broken)], "mimic-cxr-2.0.0-split.csv (or .csv.gz) not found"),
        ([str(root), "--reports_dir", str(reports), "--split_csv", str(no_column)], "lacks column(s) split"),
        ([str(root), "--reports_dir", str(reports), "--split_csv", str(not_gzip)], "not a readable gzip file"),
        ([str(root), "--reports_dir", str(tmp_path)], "has no files/p1x/ folders"),
        ([str(root), "--reports_dir", str(reports), "--split_csv", str(long_line)],
         "line 2 is longer than 1,048,576 characters"),
        ([str(root)], "no report (files/pXX/p<subject>/s<study>.txt) found under"),  # reports not beside images
        ([str(root), "--reports_dir", str(reports), "--views", " , "], "names no view position"),
        ([str(REPORTS["en"]), "--views", "frontal"], "the openi format has no view positions"),
    ]
    for k, (argv, message) in enumerate(cases):
        rc, _, stderr = convert(Path(argv[0]), None, tmp_path / f"o{k}", *argv[1:])
        if message is None:
            assert rc == 0, stderr
            continue
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (argv, stderr)


def test_folder_cached_resolve_answers_as_path_resolve(tmp_path):
    """The converter resolves each image folder once (MIMIC-CXR: 377,110 images in 227,835 folders);
    whatever the path holds, the answer must be Path.resolve's."""
    from medswift.data.pipeline.image_index import FolderCachedResolve

    real = tmp_path / "real" / "p10" / "p10000032" / "s50414267"
    real.mkdir(parents=True)
    (real / "a.jpg").write_bytes(b"x")
    (tmp_path / "linked").symlink_to(tmp_path / "real")  # a symlinked folder above the images
    (real / "b.jpg").symlink_to(tmp_path / "outside.jpg")  # a symlinked file pointing elsewhere
    (real / "loop.jpg").symlink_to(real / "loop.jpg")
    resolve = FolderCachedResolve(keep=2)  # a tiny cache: evictions happen too
    paths = [real / "a.jpg", tmp_path / "linked" / "p10" / "p10000032" / "s50414267" / "a.jpg",
             real / "b.jpg", real / "missing.jpg", real / ".." / "s50414267" / "a.jpg", Path("relative/x.jpg"),
             tmp_path / "linked" / "p10" / "p10000032" / "s50414267" / "b.jpg"]
    for path in paths * 2:  # the second round answers from the cache
        assert resolve(str(path)) == str(path.resolve()), path
    with pytest.raises((OSError, RuntimeError)):
        Path(real / "loop.jpg").resolve(strict=True)
    try:
        expected = str((real / "loop.jpg").resolve())
    except (OSError, RuntimeError) as exc:  # the converter lists this as "unusable image path"
        with pytest.raises(type(exc)):
            resolve(str(real / "loop.jpg"))
    else:
        assert resolve(str(real / "loop.jpg")) == expected
