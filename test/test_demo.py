"""The Gradio demo: its functions without a server, then the real page in Chromium and a burst
of concurrent requests through Gradio's Python client, both against a server on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from app import gradio_app as app
from conftest import BUNDLED_IMAGES, PYTHON, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


# --------------------------------------------------------------------------- functions, no server
@pytest.fixture(scope="module")
def chat(trained_adapter):
    from scripts import engine as eng

    choice = eng.resolve(None, str(trained_adapter))
    before = os.environ.get("IMAGE_MAX_TOKEN_NUM")
    eng.set_image_budget(256)  # process-wide: put it back so later tests see the defaults
    yield app.ReportChat(eng.load_engine(choice, max_batch_size=1), choice, app.Settings(max_upload_mb=1))
    if before is None:
        os.environ.pop("IMAGE_MAX_TOKEN_NUM", None)
    else:
        os.environ["IMAGE_MAX_TOKEN_NUM"] = before


def drain(gen):
    return list(gen)


def test_report_streams_and_follow_up_continues(chat):
    steps = drain(chat.new_report(None, "2_1.png", "en", app.prompts.template("en", 2), "", 24, 0))
    texts = [s[0][-1]["content"] for s in steps if s[0]]
    assert len(texts) >= 3 and len(set(texts)) >= 3, "the answer grows chunk by chunk"
    history, state, status, preview, info = steps[-1]
    assert history[0]["role"] == "user" and history[1]["role"] == "assistant" and history[1]["content"].strip()
    assert "not for diagnosis" in status and preview.size == (512, 512)
    assert "adapter" in info and "max tokens 24" in info and "greedy" in info
    follow = drain(chat.follow_up("Is there a pleural effusion?", history, state, 16, 0))
    history2, state2, _, box = follow[-1]
    assert [m["role"] for m in history2] == ["user", "assistant", "user", "assistant"] and box == ""
    assert [m["role"] for m in state2["messages"]] == ["user", "assistant", "user", "assistant"]
    assert state2["messages"][0]["content"].startswith("<image>"), "the image stays with the conversation"


def test_dicom_upload_works(chat):
    steps = drain(chat.new_report(get_testdata_file("CT_small.dcm"), None, "zh", None, "", 16, 0))
    assert steps[-1][3].size == (128, 128) and steps[-1][0][-1]["content"]


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "notes.png").write_text("hello") and d / "notes.png", "it is not an image or DICOM file"),
    (lambda d: (d / "cut.png").write_bytes((BUNDLED_IMAGES / "2_1.png").read_bytes()[:5000]) and d / "cut.png",
     "the image file is truncated"),
    (lambda d: Path(get_testdata_file("rtplan.dcm")), "holds no image (no pixel data)"),
    (lambda d: Path(get_testdata_file("MR_truncated.dcm")), "the DICOM file is truncated"),
    (lambda d: (d / "big.png").write_bytes(b"\0" * (2 * 2**20)) and d / "big.png", "the limit is 1 MB"),
    (lambda d: None, "Upload an X-ray"),
])
def test_bad_uploads_get_a_message(chat, tmp_path, make, message):
    path = make(tmp_path)
    steps = drain(chat.new_report(str(path) if path else None, None, "en", None, "", 16, 0))
    history, state, status, preview, _ = steps[-1]
    assert len(steps) == 1 and history == [] and state is None and preview is None
    assert status.startswith("⚠️") and message in status


def test_prompt_settings_and_auth_helpers():
    assert app.resolve_prompt("zh", app.prompts.template("zh", 5), "") == app.prompts.template("zh", 5)
    assert app.resolve_prompt("en", app.FREE_TEXT, "  Any fracture?  ") == "Any fracture?"
    with pytest.raises(app.DemoInputError):
        app.resolve_prompt("en", app.FREE_TEXT, " ")
    assert app.template_choices("zh")[-1] == app.FREE_TEXT and len(app.template_choices("zh")) == 13
    assert app.clamp_settings(100000, 9) == (1024, 1.5) and app.clamp_settings(0, -1) == (16, 0.0)
    assert app.parse_auth("alice:s3:cret") == ("alice", "s3:cret") and app.parse_auth(None) is None
    with pytest.raises(app.DemoInputError):
        app.parse_auth("alice")
    assert app.exposure_warnings("127.0.0.1", None, False) == []
    assert "without --auth" in app.exposure_warnings("0.0.0.0", None, False)[0]
    assert app.exposure_warnings("0.0.0.0", ("a", "b"), False) == []
    assert "public link" in app.exposure_warnings("127.0.0.1", None, True)[0]


def test_follow_up_needs_a_report_first(chat):
    (step,) = drain(chat.follow_up("Any effusion?", [], None, 16, 0))
    assert "Generate a report first" in step[2]


# --------------------------------------------------------------------------- the real server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_adapter, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([PYTHON, str(ROOT / "app" / "gradio_app.py"), "--adapter_path", str(trained_adapter),
                                 "--port", str(port), "--image_max_token_num", "256", "--queue_size", "16"],
                                cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "GRADIO_ANALYTICS_ENABLED": "0"},
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("demo exited early:\n" + log.read_text()[-3000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("demo did not start:\n" + log.read_text()[-3000:])
    yield url, log
    proc.terminate()
    proc.wait(timeout=30)


def test_server_binds_loopback_only(server):
    url, log = server
    text = log.read_text()
    assert "Running on local URL:  http://127.0.0.1:" in text and "0.0.0.0" not in text
    assert "gradio.live" not in text, "no public share link by default"


def test_real_browser_end_to_end(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log = server
    junk = tmp_path / "not_an_xray.png"
    junk.write_text("this is not an image")
    shot = ROOT / "results" / "demo_screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url)
        assert "not for diagnosis" in page.inner_text("#notice")
        page.set_input_files("#upload input[type=file]", str(BUNDLED_IMAGES / "2_1.png"))
        page.wait_for_timeout(800)  # the upload reaches the server
        page.click("#submit")
        bot = page.locator("#chat .message.bot").last
        bot.wait_for(timeout=120_000)
        lengths = []
        for _ in range(200):  # watch the answer grow while it streams
            lengths.append(len(bot.inner_text()))
            if "not for diagnosis" in page.inner_text("#status") and page.locator(".generating").count() == 0:
                break
            page.wait_for_timeout(50)
        assert lengths[-1] > 0 and len(set(lengths)) >= 2, f"no streaming seen: {lengths[:20]}"
        first_answer = bot.inner_text()
        page.fill("#question textarea", "Is the heart enlarged?")
        page.click("#ask")
        page.wait_for_function("document.querySelectorAll('#chat .message.bot').length >= 2", timeout=120_000)
        page.wait_for_function("document.querySelectorAll('#chat .message.user').length >= 2", timeout=10_000)
        page.wait_for_timeout(1500)
        assert page.locator("#chat .message.bot").nth(0).inner_text() == first_answer
        page.screenshot(path=str(shot), full_page=True)
        # a file that is not an image: a clear message on the page, and the server keeps serving
        page.click("#clear")
        page.set_input_files("#upload input[type=file]", str(junk))
        page.wait_for_timeout(800)
        page.click("#submit")
        page.wait_for_function("document.querySelector('#status').innerText.includes('Could not read')",
                               timeout=60_000)
        assert "it is not an image or DICOM file" in page.inner_text("#status")
        browser.close()
    assert shot.stat().st_size > 10_000
    assert urllib.request.urlopen(url, timeout=5).status == 200
    logged = log.read_text()
    assert "2_1.png" not in logged and "not_an_xray" not in logged, "no file names in the server log"


def test_burst_of_concurrent_requests(server):
    from gradio_client import Client

    url, _ = server
    # The burst checks the queue, not file serving: leave the preview image on the server.
    client = Client(url, verbose=False, download_files=False)
    n = 6

    def one(i):
        start = time.perf_counter()
        job = client.submit(None, "2_1.png" if i % 2 else "348_2.png", "en", app.prompts.template("en", i % 12), "",
                            16, 0, api_name="/new_report")
        history = job.result(timeout=300)[0]
        return time.perf_counter() - start, history

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    latencies = sorted(r[0] for r in results)
    assert all(h and h[-1]["role"] == "assistant" and h[-1]["content"] for _, h in results), "every request answered"
    print(f"{n} concurrent requests, concurrency 1: latency p50 {statistics.median(latencies):.2f} s, "
          f"max {latencies[-1]:.2f} s, min {latencies[0]:.2f} s")
    assert latencies[-1] > latencies[0], "queued one after another, not all at once"
