"""Serving: the deploy launcher starts a real `swift deploy` server (tiny model + trained LoRA,
CPU, 127.0.0.1, API key), scripts/serve_client.py talks to it, bad requests get a 4xx and the
server keeps serving, a burst of concurrent requests is answered, and the launcher's guards hold."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import BUNDLED_IMAGES, PYTHON, ROOT, run

LAUNCHER = str(ROOT / "tools" / "swift" / "deploy_qwen3vl.sh")
CLIENT = str(ROOT / "scripts" / "serve_client.py")
API_KEY = "test-key-5f2c"
START_TIMEOUT = 180
ROW_FIELDS = {"key", "id", "image", "control", "prompt", "response", "reasoning", "reference", "model", "adapter",
              "backend", "generation", "seconds"}  # scripts/batch_infer.py's row
SERVER_ENV = {"CUDA_VISIBLE_DEVICES": "", "IMAGE_MAX_TOKEN_NUM": "256"}
NO_PROXY = {"http": None, "https": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_data_url(path: Path) -> str:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(url: str, content, key: str | None = API_KEY, max_tokens: int = 16, stream: bool = False,
         timeout: float = 300) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "medswift", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}
    return requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout,
                         proxies=NO_PROXY)


def image_content(data_url: str, text: str = "Describe the chest X-ray.") -> list:
    return [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]


def answer(resp: requests.Response) -> str:
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()["choices"][0]["message"]["content"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def client(server: dict, *args: str, key: str | None = API_KEY, check: bool = True):
    env = {"MEDSWIFT_API_KEY": key} if key else {}
    return run([PYTHON, CLIENT, "--url", server["url"], "--lang", "en", *args], env=env, check=check, timeout=600)


# --------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tiny_model, trained_adapter, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, **SERVER_ENV, "MODEL": str(tiny_model), "ADAPTER": str(trained_adapter),
           "PORT": str(port), "API_KEY": API_KEY, "MAX_NEW_TOKENS": "64", "INFER_BATCH": "4"}
    env.pop("DRY_RUN", None)
    log = open(log_path, "w")
    # Own process group: `swift deploy` runs the server in a child python; teardown ends both.
    proc = subprocess.Popen(["bash", LAUNCHER, "--log_interval", "-1"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/v1/models", timeout=2, proxies=NO_PROXY).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > START_TIMEOUT:
                pytest.fail(f"server not up after {START_TIMEOUT} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        print(f"\n[serving] server up on {url} after {time.monotonic() - t0:.1f} s")
        yield {"url": url, "proc": proc, "log": log_path}
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's process group, wait until every member is gone, SIGKILL after `grace`."""
    def alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if alive():
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        proc.poll()  # reap the launcher so its group can empty
        time.sleep(0.2)
    if alive():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not alive(), "server processes survived teardown"


@pytest.fixture(scope="module")
def image_url() -> str:
    return png_data_url(BUNDLED_IMAGES / "2_1.png")


def test_models_endpoint_lists_the_served_name(server):
    models = requests.get(f"{server['url']}/v1/models", timeout=10, proxies=NO_PROXY).json()
    assert [m["id"] for m in models["data"]] == ["medswift"]
    # the launcher bound loopback only, not ms-swift's default 0.0.0.0
    assert f"Uvicorn running on http://127.0.0.1:{server['url'].rsplit(':', 1)[1]}" in server["log"].read_text()


def test_client_streams_one_image_and_writes_a_batch_infer_row(server, tmp_path):
    out = tmp_path / "one.jsonl"
    image = str(BUNDLED_IMAGES / "2_1.png")
    proc = client(server, "--test_images", image, "--max_new_tokens", "32", "--output_file", str(out))
    assert "Research use only" in proc.stdout + proc.stderr
    (row,) = read_jsonl(out)
    assert set(row) == ROW_FIELDS
    assert row["response"].strip(), row
    assert row["response"].strip()[:20] in proc.stdout  # streamed to stdout as it came
    assert row["backend"] == "server" and row["adapter"] is None and row["control"] is None
    assert row["model"] == "medswift" and row["image"] == image and row["key"] == image
    assert row["generation"]["stream"] is True and row["generation"]["max_new_tokens"] == 32
    assert row["seconds"] > 0
    assert "written 1" in proc.stdout


def test_client_skips_unreadable_images_and_sends_dicom_pixels(server, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    dicom = get_testdata_file("CT_small.dcm")
    out = tmp_path / "mixed.jsonl"
    proc = client(server, "--test_images", str(BUNDLED_IMAGES / "1447_1.png"), str(broken), str(missing), dicom,
                  "--max_new_tokens", "8", "--concurrency", "2", "--output_file", str(out))
    rows = read_jsonl(out)
    assert sorted(r["image"] for r in rows) == sorted([str(BUNDLED_IMAGES / "1447_1.png"), dicom])
    assert all(r["response"] is not None for r in rows)
    skipped = [line for line in proc.stdout.splitlines() if line.strip().startswith("skipped ")]
    assert len(skipped) == 2 and any(str(broken) in s for s in skipped) and any(str(missing) in s for s in skipped)
    assert "written 2" in proc.stdout and "skipped 2" in proc.stdout and "failed 0" in proc.stdout
    # resume: nothing left to send
    again = client(server, "--test_images", str(BUNDLED_IMAGES / "1447_1.png"), dicom, "--resume",
                   "--output_file", str(out))
    assert "already done 2" in again.stdout and len(read_jsonl(out)) == 2


def test_client_dataset_output_feeds_evaluate(server, converted, tmp_path):
    out = tmp_path / "val_pred.jsonl"
    val = converted / "val.jsonl"
    client(server, "--dataset", str(val), "--max_new_tokens", "48", "--concurrency", "2", "--output_file", str(out))
    rows = read_jsonl(out)
    assert len(rows) == len(read_jsonl(val))
    assert all(r["reference"] and r["id"] and r["response"].strip() for r in rows)
    report = tmp_path / "eval"
    run([PYTHON, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(out), "--output_dir", str(report)],
        timeout=600)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics, "metrics.json is empty"


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, image_url):
    url = server["url"]
    observed = {}

    wrong_key = chat(url, image_content(image_url), key="wrong")
    no_key = chat(url, image_content(image_url), key=None)
    broken_b64 = chat(url, image_content("data:image/png;base64,AAAAbroken!!"))
    not_an_image = chat(url, image_content("data:image/png;base64," + base64.b64encode(b"hello world").decode()))
    wrong_model = requests.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                                json={"model": "other", "messages": [{"role": "user", "content": "x"}]},
                                timeout=60, proxies=NO_PROXY)
    for name, resp in (("wrong API key", wrong_key), ("no API key", no_key), ("broken base64", broken_b64),
                       ("valid base64, not an image", not_an_image), ("unknown model", wrong_model)):
        observed[name] = (resp.status_code, resp.text[:120])
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[:300])
    # ms-swift 4.6 uses 400 for all of these (not 401 for the key), with {"object": "error"}
    assert wrong_key.json() == {"message": "API key error", "object": "error"}
    assert no_key.json() == {"message": "API key error", "object": "error"}

    # Observed, not a 4xx: ms-swift answers a text-only request (no image) with 200. The client layer
    # is what refuses: it only ever sends a request with a checked image (see the skipped-images test).
    no_image = chat(url, "Describe the chest X-ray.")
    observed["no image"] = (no_image.status_code, no_image.text[:80])
    assert no_image.status_code == 200 and no_image.json()["object"] == "chat.completion"

    # Observed, streaming: the image is decoded after the 200 is sent, so a bad image gives 200 and a
    # stream that ends without [DONE]; the client reports that as a failed request, not an empty answer.
    from scripts import serve_client

    bad_stream = chat(url, image_content("data:image/png;base64," + base64.b64encode(b"hello").decode()),
                      stream=True)
    observed["bad image, stream=true"] = (bad_stream.status_code, bad_stream.text[:80])
    assert bad_stream.status_code == 200 and "[DONE]" not in bad_stream.text
    session = serve_client.make_session(url, API_KEY)
    body = {"model": "medswift", "stream": True, "max_tokens": 4,
            "messages": [{"role": "user", "content": image_content("data:image/png;base64,aGVsbG8=")}]}
    with pytest.raises(serve_client.RequestFailed, match="without \\[DONE\\]"):
        serve_client.ask(session, url, body, timeout=120)

    for name, (status, text) in observed.items():
        print(f"[serving] {name}: HTTP {status} {text!r}")
    # still serving
    assert answer(chat(url, image_content(image_url))).strip()
    assert server["proc"].poll() is None


def test_client_with_a_wrong_key_fails_one_line_per_request(server, tmp_path):
    out = tmp_path / "denied.jsonl"
    proc = client(server, "--test_images", str(BUNDLED_IMAGES / "2_2.png"), "--output_file", str(out),
                  key="wrong", check=False)
    assert proc.returncode == 1
    failed = [line for line in proc.stdout.splitlines() if line.strip().startswith("failed ")]
    assert failed == [f"  failed {BUNDLED_IMAGES / '2_2.png'}: HTTP 400: API key error"], proc.stdout
    assert not out.exists() or not out.read_text()


def test_client_without_a_server_is_one_line(tmp_path):
    proc = run([PYTHON, CLIENT, "--url", f"http://127.0.0.1:{free_port()}", "--test_images",
                str(BUNDLED_IMAGES / "2_1.png"), "--output_file", str(tmp_path / "x.jsonl")], check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "no server at" in errors[0], proc.stderr


def test_concurrent_burst_is_all_answered(server, image_url):
    n = 6
    results: list = [None] * n

    def worker(i):
        t0 = time.perf_counter()
        try:
            resp = chat(server["url"], image_content(image_url, f"Describe the chest X-ray. ({i})"), max_tokens=32)
            results[i] = (resp.status_code, resp.json(), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[i] = (None, repr(exc), time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    assert all(r is not None for r in results), "a request never returned"
    assert all(r[0] == 200 for r in results), [r[:2] for r in results]
    assert all(r[1]["choices"][0]["message"]["content"].strip() for r in results)
    from scripts.serve_client import percentile

    lat = [r[2] for r in results]
    print(f"\n[serving] burst of {n} concurrent requests (32 new tokens, CPU): wall {wall:.2f} s, "
          f"p50 {percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s")
    assert server["proc"].poll() is None


# --------------------------------------------------------------------------- launcher guards (no server)
def dry(env: dict, *args: str, check: bool = True):
    return run(["bash", LAUNCHER, *args], env={**SERVER_ENV, "DRY_RUN": "1", "API_KEY": "", "HOST": "",
                                                "PORT": "", **env}, check=check, timeout=120)


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_dry_run_defaults_to_loopback(tiny_model):
    proc = dry({"NO_ADAPTER": "1", "MODEL": str(tiny_model)})
    argv = shlex.split(proc.stdout.strip())
    argv = argv[argv.index("deploy") - 1:]
    assert argv[1] == "deploy"
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "8000"
    assert flag(argv, "--served_model_name") == "medswift" and flag(argv, "--infer_backend") == "transformers"
    assert flag(argv, "--model") == str(tiny_model) and "--adapters" not in argv and "--api_key" not in argv


def test_dry_run_with_adapter_and_key(tiny_model, trained_adapter):
    proc = dry({"ADAPTER": str(trained_adapter), "HOST": "0.0.0.0", "PORT": "9001", "API_KEY": "s3cret"})
    argv = shlex.split(proc.stdout.strip())
    assert flag(argv, "--adapters") == str(trained_adapter) and flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "9001" and flag(argv, "--api_key") == "<API_KEY>"
    assert "s3cret" not in proc.stdout + proc.stderr  # the printed command hides the key
    passed = dry({"ADAPTER": str(trained_adapter), "HOST": "0.0.0.0"}, "--api_key", "k2")
    assert flag(shlex.split(passed.stdout.strip()), "--api_key") == "<API_KEY>"


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def test_public_host_without_api_key_stops(tiny_model):
    line = one_error_line(dry({"NO_ADAPTER": "1", "MODEL": str(tiny_model), "HOST": "0.0.0.0"}, check=False))
    assert "API_KEY" in line


def test_host_flag_cannot_bypass_the_check(tiny_model):
    line = one_error_line(dry({"NO_ADAPTER": "1", "MODEL": str(tiny_model)}, "--host", "0.0.0.0", check=False))
    assert "HOST" in line


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_is_one_line(tiny_model):
    line = one_error_line(dry({"NO_ADAPTER": "1", "MODEL": str(tiny_model), "INFER_BACKEND": "vllm"}, check=False))
    assert "vllm is not installed" in line


def test_busy_port_stops_before_loading(tiny_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run(["bash", LAUNCHER], env={**SERVER_ENV, "DRY_RUN": "0", "NO_ADAPTER": "1",
                                            "MODEL": str(tiny_model), "PORT": str(port), "API_KEY": ""},
                   check=False, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and f":{port}" in errors[0], proc.stderr
