"""Prior studies at inference: batch inference takes a --priors dataset (current views + the prior's
frontal view, its report in the prompt) or --prior_image/--prior_report_file beside --test_images;
rows say whether a prior was given; the report card's temporal section counts change described
without one; the server answers a request carrying the prior through scripts/serve_client.py."""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets

import pytest

from helpers import (BUNDLED_IMAGES, PYTHON, ROOT, SERVER_ENV, free_port, read_jsonl, run, running_server,
                     write_mimic_cxr)
from medswift.data.converters import reports as converter
from medswift.infer import batch
from medswift.infer.inputs import collect_items

SCRIPT = str(ROOT / "scripts" / "batch_infer.py")
FAST = ["--max_new_tokens", "8", "--image_max_token_num", "64", "--quiet"]
ENV = {"CUDA_VISIBLE_DEVICES": ""}
PRIOR_REPORT = "Moderate left pleural effusion. Mild cardiomegaly."


def mimic_study(number, day, findings, views=("PA", "LATERAL")):
    text = (" FINAL REPORT\n INDICATION:  ___F with dyspnea.\n \n TECHNIQUE:  Chest PA and lateral.\n \n"
            f" COMPARISON:  ___.\n \n FINDINGS: \n \n {findings}\n \n IMPRESSION: \n \n See findings.\n")
    return {"subject": "10000032", "study": number, "split": "test", "views": list(views), "date": day,
            "time": "101010.0", "report": text}


@pytest.fixture(scope="module")
def longitudinal(tmp_path_factory):
    """A --priors conversion of a dated MIMIC-CXR-JPG miniature: one study without a prior, two with."""
    base = tmp_path_factory.mktemp("long")
    root, reports = write_mimic_cxr(base, [
        mimic_study("50000001", "21800101", "Small left pleural effusion."),
        mimic_study("50000002", "21800110", "The left effusion has increased."),
        mimic_study("50000003", "21800120", "The effusion is stable.", views=("AP",)),
    ])
    out = base / "swift"
    with contextlib.redirect_stdout(io.StringIO()):
        assert converter.main(["--input", str(root), "--reports_dir", str(reports), "--output_dir", str(out),
                               "--lang", "en", "--quiet", "--workers", "1", "--priors", "--context"]) == 0
    return out


def parse(*argv: str):
    return batch.build_parser().parse_args(list(argv))


def test_prior_flags_make_the_prior_the_last_image_with_its_report(tmp_path):
    report = tmp_path / "prior.txt"
    report.write_text(PRIOR_REPORT + "\n")
    current, prior = str(BUNDLED_IMAGES / "2_1.png"), str(BUNDLED_IMAGES / "2_2.png")
    (item,) = collect_items(parse("--test_images", current, "--prior_image", prior, "--prior_report_file",
                                  str(report), "--prior_days", "30", "--lang", "en", "--template", "3"))
    assert item.images == [current, prior] and item.prior_given and item.key.endswith("2_1.png")
    assert item.prompt.startswith("Read the current chest radiograph together with the prior study's frontal")
    assert "taken 30 days earlier" in item.prompt
    assert item.prompt.endswith(f"[PRIOR REPORT]\n{PRIOR_REPORT}\n[END OF PRIOR REPORT]")
    (free,) = collect_items(parse("--test_images", current, "--prior_image", prior, "--prompt", "Compare."))
    assert free.prompt == "Compare." and free.images == [current, prior]  # no report given: no empty section
    (plain,) = collect_items(parse("--test_images", current))
    assert plain.images == [current] and not plain.prior_given


def test_vllm_gets_its_image_limit_raised_to_the_most_images(longitudinal):
    items = collect_items(parse("--dataset", str(longitudinal / "test.jsonl")))
    assert max(len(it.images) for it in items) == 3  # two current views and the prior's frontal view
    assert batch.vllm_image_limit("vllm", items) == {"limit_mm_per_prompt": {"image": 3}}
    assert batch.vllm_image_limit("transformers", items) == {}


def test_prior_flags_refuse_what_they_cannot_mean(tmp_path, longitudinal, capsys):
    report = tmp_path / "prior.txt"
    report.write_bytes(b"caf\xe9")
    image = str(BUNDLED_IMAGES / "2_1.png")
    cases = [
        (["--test_images", image, "--prior_report_file", str(report)], "give its --prior_image too"),
        (["--dataset", str(longitudinal / "test.jsonl"), "--prior_image", image], "carries its own prior"),
        (["--test_images", image, "--prior_image", str(tmp_path / "none.png")], "--prior_image not found"),
        (["--test_images", image, "--prior_image", image, "--prior_report_file", str(report)], "not UTF-8"),
        (["--dataset", str(longitudinal / "test.jsonl"), "--template", "2"], "would drop it"),
    ]
    for argv, message in cases:
        assert batch.main(argv + ["--output_file", str(tmp_path / "o.jsonl")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
        assert "café" not in err[0]


def test_batch_inference_on_a_priors_dataset_feeds_the_temporal_card(tiny_model, longitudinal, tmp_path):
    out = tmp_path / "pred.jsonl"
    proc = run([PYTHON, SCRIPT, "--dataset", str(longitudinal / "test.jsonl"), "--output_file", str(out),
                "--lang", "en", *FAST], env=ENV)
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert "written 3" in proc.stdout, proc.stdout
    assert {k: (len(r["images"]), r["prior_given"], r["prior_study_id"]) for k, r in rows.items()} == {
        "s50000001": (2, False, None), "s50000002": (3, True, "s50000001"), "s50000003": (2, True, "s50000002")}
    assert rows["s50000002"]["images"][-1].endswith(".jpg") and "/s50000001/" in rows["s50000002"]["images"][-1]
    assert "[PRIOR REPORT]\nFindings: Small left pleural effusion." in rows["s50000002"]["prompt"]
    assert "The left effusion has increased" not in proc.stdout + proc.stderr  # no report text in the logs
    card = tmp_path / "card"
    run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(out), "--output_dir", str(card),
         "--bootstrap", "0"])
    temporal = json.loads((card / "metrics.json").read_text())["temporal"]
    assert temporal["rows_without_prior"] == 1 and temporal["rows_prior_unknown"] == 0
    assert temporal["references_with_change"] == 2  # "increased", "stable"


def test_server_answers_a_request_with_the_prior(tiny_model, tmp_path):
    key = f"test-key-{secrets.token_hex(8)}"
    port = free_port()
    env = {**os.environ, **SERVER_ENV, "MODEL": str(tiny_model), "NO_ADAPTER": "1", "PORT": str(port),
           "API_KEY": key, "MAX_NEW_TOKENS": "64"}
    env.pop("DRY_RUN", None)
    url = f"http://127.0.0.1:{port}"
    report = tmp_path / "prior.txt"
    report.write_text(PRIOR_REPORT)
    launcher = ["bash", str(ROOT / "tools" / "swift" / "deploy_qwen3vl.sh"), "--log_interval", "-1"]
    with running_server(launcher, env, tmp_path / "server.log", url, 180):
        out = tmp_path / "served.jsonl"
        proc = run([PYTHON, str(ROOT / "scripts" / "serve_client.py"), "--url", url, "--lang", "en",
                    "--test_images", str(BUNDLED_IMAGES / "2_1.png"), "--prior_image", str(BUNDLED_IMAGES / "2_2.png"),
                    "--prior_report_file", str(report), "--max_new_tokens", "8", "--output_file", str(out)],
                   env={"MEDSWIFT_API_KEY": key}, timeout=600)
    (row,) = read_jsonl(out)
    assert "written 1" in proc.stdout and row["prior_given"] is True and len(row["images"]) == 2
    assert PRIOR_REPORT in row["prompt"]
    log = (tmp_path / "server.log").read_text()
    assert "Moderate left pleural effusion" not in log and key not in log
