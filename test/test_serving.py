"""Serving: the deploy launcher starts a real server (scripts/serve.py: ms-swift's deploy app in one
process; tiny model + trained LoRA, CPU, 127.0.0.1, API key), scripts/serve_client.py talks to it,
bad requests get a 4xx and the server keeps serving, a burst of concurrent requests is answered,
the key reaches no process list and no log, max_tokens has a ceiling, a generation stops when its
client leaves, image paths are no file oracle, and the launcher's guards hold."""
from __future__ import annotations

import base64
import importlib.util
import http.client
import json
import os
import secrets
import shlex
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from pydicom.data import get_testdata_file

from helpers import (BUNDLED_IMAGES, NO_PROXY, PYTHON, ROOT, SERVER_ENV, flag, free_port, png_data_url,
                     read_jsonl, refused, run, running_server)
from medswift.infer.prediction_rows import REPORT_ROW_FIELDS

LAUNCHER = str(ROOT / "tools" / "swift" / "deploy_qwen3vl.sh")
CLIENT = str(ROOT / "scripts" / "serve_client.py")
API_KEY = f"test-key-{secrets.token_hex(8)}"  # unique: the process-list check must not see another run's key
SERVED = "tiny-qwen3-vl"  # the served name defaults to the model folder's name (here the adapter's base)
CEILING = 4096  # the server's MAX_NEW_TOKENS: long enough that a generation nobody stops outlasts the tests
START_TIMEOUT = 180
ROW_FIELDS = set(REPORT_ROW_FIELDS)  # the one row format, as batch inference writes it
def chat(url: str, content, key: str | None = API_KEY, max_tokens: int = 16, stream: bool = False,
         timeout: float = 300) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": SERVED, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}
    return requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout,
                         proxies=NO_PROXY)


def image_content(data_url: str, text: str = "Describe the chest X-ray.") -> list:
    return [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]


def answer(resp: requests.Response) -> str:
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()["choices"][0]["message"]["content"]


def client(server: dict, *args: str, key: str | None = API_KEY, check: bool = True):
    env = {"MEDSWIFT_API_KEY": key} if key else {}
    return run([PYTHON, CLIENT, "--url", server["url"], "--lang", "en", *args], env=env, check=check, timeout=600)


# --------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tiny_model, trained_adapter, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, **SERVER_ENV, "MODEL": str(tiny_model), "ADAPTER": str(trained_adapter),
           "PORT": str(port), "API_KEY": API_KEY, "MAX_NEW_TOKENS": str(CEILING), "INFER_BATCH": "4"}
    env.pop("DRY_RUN", None)
    url = f"http://127.0.0.1:{port}"
    with running_server(["bash", LAUNCHER, "--log_interval", "-1"], env, log_path, url, START_TIMEOUT) as proc:
        yield {"url": url, "proc": proc, "log": log_path}


@pytest.fixture(scope="module")
def image_url() -> str:
    return png_data_url(BUNDLED_IMAGES / "2_1.png")


def test_models_endpoint_lists_the_served_name(server):
    models = requests.get(f"{server['url']}/v1/models", timeout=10, proxies=NO_PROXY).json()
    assert [m["id"] for m in models["data"]] == [SERVED]
    # the launcher bound loopback only, not ms-swift's default 0.0.0.0
    assert f"Uvicorn running on http://127.0.0.1:{server['url'].rsplit(':', 1)[1]}" in server["log"].read_text()


def test_client_streams_one_image_and_writes_a_batch_infer_row(server, tmp_path):
    out = tmp_path / "one.jsonl"
    image = str(BUNDLED_IMAGES / "2_1.png")
    proc = client(server, "--test_images", image, "--max_new_tokens", "32", "--output_file", str(out))
    assert "not for diagnosis" in proc.stdout + proc.stderr
    (row,) = read_jsonl(out)
    assert set(row) == ROW_FIELDS
    assert row["response"].strip(), row
    assert row["response"].strip()[:20] in proc.stdout  # streamed to stdout as it came
    assert row["backend"] == "server" and row["adapter"] is None and row["control"] is None
    assert row["model"] == SERVED and row["image"] == image and row["key"] == image
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
    assert metrics["n"] == len(rows) and metrics["problems"] == [], "every served answer is scored"
    assert set(metrics["text"]) == {"ptb"} and 0 <= metrics["text"]["ptb"]["bleu_1"] <= 1


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
    # 401 for the key (ms-swift alone says 400), 404 for a model the server does not serve, like OpenAI's
    assert wrong_key.status_code == no_key.status_code == 401 and wrong_key.json() == no_key.json()
    assert wrong_key.json()["error"]["code"] == "invalid_api_key" and wrong_key.headers["www-authenticate"] == "Bearer"
    assert wrong_model.status_code == 404 and wrong_model.json()["error"]["code"] == "model_not_found"
    assert SERVED in wrong_model.json()["message"]

    # Observed, not a 4xx: ms-swift answers a text-only request (no image) with 200. The client layer
    # is what refuses: it only ever sends a request with a checked image (see the skipped-images test).
    no_image = chat(url, "Describe the chest X-ray.")
    observed["no image"] = (no_image.status_code, no_image.text[:80])
    assert no_image.status_code == 200 and no_image.json()["object"] == "chat.completion"

    # Streaming: ms-swift decodes the image after the 200 is sent; the server decodes it before, so a bad
    # image is refused with 400 before the stream starts, and the client reports a failed request.
    from medswift.infer import client as serve_client

    bad_stream = chat(url, image_content("data:image/png;base64," + base64.b64encode(b"hello").decode()),
                      stream=True)
    observed["bad image, stream=true"] = (bad_stream.status_code, bad_stream.text[:80])
    assert bad_stream.status_code == 400 and bad_stream.json()["error"]["code"] == "invalid_image", bad_stream.text
    session = serve_client.make_session(url, API_KEY)
    body = {"model": SERVED, "stream": True, "max_tokens": 4,
            "messages": [{"role": "user", "content": image_content("data:image/png;base64,aGVsbG8=")}]}
    with pytest.raises(serve_client.RequestFailed, match="not an image"):
        serve_client.ask(session, url, body, timeout=120)

    for name, (status, text) in observed.items():
        print(f"[serving] {name}: HTTP {status} {text!r}")
    # still serving
    assert answer(chat(url, image_content(image_url))).strip()
    assert server["proc"].poll() is None


def test_client_with_a_wrong_key_fails_one_line_and_stops_sending(server, tmp_path):
    out = tmp_path / "denied.jsonl"
    first, second = str(BUNDLED_IMAGES / "2_2.png"), str(BUNDLED_IMAGES / "2_1.png")
    proc = client(server, "--test_images", first, second, "--concurrency", "1", "--output_file", str(out),
                  key="wrong", check=False)
    assert proc.returncode == 1
    failed = [line for line in proc.stdout.splitlines() if line.strip().startswith("failed ")]
    assert len(failed) == 2 and failed[0].startswith(f"  failed {first}: HTTP 401: API key error"), proc.stdout
    assert failed[1] == "  failed 1 more: not sent after the server refused the API key", proc.stdout
    assert not out.exists() or not out.read_text()


def test_openai_clients_get_authentication_and_not_found_errors(server, image_url):
    import httpx
    import openai

    def openai_client(key: str):
        return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=key, max_retries=0,
                             http_client=httpx.Client(trust_env=False, timeout=120))

    messages = [{"role": "user", "content": image_content(image_url)}]
    with pytest.raises(openai.AuthenticationError):
        openai_client("wrong").chat.completions.create(model=SERVED, messages=messages, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        openai_client(API_KEY).chat.completions.create(model="gpt-4o", messages=messages, max_tokens=4)
    # a client naming the real model (the adapter's base model folder) is answered
    completion = openai_client(API_KEY).chat.completions.create(model=SERVED, messages=messages, max_tokens=4,
                                                                temperature=0)
    assert completion.model and completion.choices[0].finish_reason in ("length", "stop")


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
    from medswift.infer.client import percentile

    lat = [r[2] for r in results]
    print(f"\n[serving] burst of {n} concurrent requests (32 new tokens, CPU): wall {wall:.2f} s, "
          f"p50 {percentile(lat, 50):.2f} s, p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s")
    assert server["proc"].poll() is None


def test_max_tokens_above_the_ceiling_is_refused_at_once(server, image_url):
    huge = chat(server["url"], image_content(image_url), max_tokens=100_000, timeout=60)
    assert huge.status_code == 400, huge.text[:300]
    # this code comes from the server's door check, which runs before the request reaches the engine:
    # nothing was generated (the engine's own failure would come after generating)
    assert huge.json()["error"]["code"] == "max_tokens_too_large" and str(CEILING) in huge.json()["message"]
    for bad in ({"max_tokens": 0}, {"max_tokens": 4, "n": 100}, {"max_tokens": 4, "num_beams": 64},
                {"max_tokens": 4, "n": 2, "stream": True}):  # ms-swift's engine would fail after the 200
        body = {"model": SERVED, "messages": [{"role": "user", "content": image_content(image_url)}], **bad}
        resp = requests.post(f"{server['url']}/v1/chat/completions", json=body, timeout=60, proxies=NO_PROXY,
                             headers={"Authorization": f"Bearer {API_KEY}"})
        assert resp.status_code == 400, (bad, resp.status_code, resp.text[:300])
    assert answer(chat(server["url"], image_content(image_url), max_tokens=4)) is not None


def start_and_leave(url: str, body: dict, stream: bool, stay: float = 1.0) -> int:
    """POST a chat request, hang up after `stay` seconds; return the stream events read by then."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=stay)
    events = 0
    t0 = time.monotonic()
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()  # a stream's headers come at once; a plain answer only at the end
        assert resp.status == 200, resp.read()[:300]
        while time.monotonic() - t0 < stay:
            line = resp.readline()
            events += line.startswith(b"data:")
            if b"[DONE]" in line:
                break
    except (TimeoutError, socket.timeout):
        pass
    finally:
        conn.close()
    return events


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_generation_stops_when_its_client_disconnects(server, image_url, stream):
    """No max_tokens: the request may run to the ceiling, 4096 tokens. Sampled at temperature 2 from
    151k tokens the tiny model practically never ends on its own (greedy, it ends after ~30), so nobody
    stopping it would keep the server busy for minutes. Once its client is gone it must stop, and the
    next request be answered at once."""
    body = {"model": SERVED, "messages": [{"role": "user", "content": image_content(image_url)}],
            "temperature": 2.0, "stream": stream}
    events = start_and_leave(server["url"], body, stream)
    if stream:
        assert events >= 1, "the stream had not started: nothing was being generated"
    t0 = time.perf_counter()
    try:
        follow_up = chat(server["url"], image_content(image_url), max_tokens=4, timeout=90)
    except requests.Timeout:
        pytest.fail("the next request got no answer in 90 s: the abandoned generation went on")
    waited = time.perf_counter() - t0
    assert follow_up.status_code == 200, follow_up.text[:300]
    print(f"\n[serving] client left a {'streamed' if stream else 'plain'} request after 1 s "
          f"({events} events read); the next request was answered {waited:.2f} s later")
    assert waited < 15, f"the next request waited {waited:.1f} s: the abandoned generation went on"


@pytest.mark.parametrize("form", ["image_url", "file_url", "images_field"])
def test_image_paths_get_one_answer_whether_or_not_the_file_exists(server, tmp_path, form):
    existing, missing = str(BUNDLED_IMAGES / "2_1.png"), str(tmp_path / "no-such-image.png")
    assert Path(existing).is_file() and not Path(missing).exists()

    def ask_with(path: str) -> requests.Response:
        if form == "images_field":  # ms-swift's own field: a list of images beside the messages
            body = {"model": SERVED, "max_tokens": 4, "images": [path],
                    "messages": [{"role": "user", "content": "<image>Describe the chest X-ray."}]}
            return requests.post(f"{server['url']}/v1/chat/completions", json=body, timeout=120,
                                 proxies=NO_PROXY, headers={"Authorization": f"Bearer {API_KEY}"})
        return chat(server["url"], image_content(path if form == "image_url" else f"file://{path}"), max_tokens=4)

    there, absent = ask_with(existing), ask_with(missing)
    assert (there.status_code, there.text) == (absent.status_code, absent.text)
    assert there.status_code == 400 and "data: URL" in there.json()["message"], there.text[:300]
    assert existing not in there.text


def test_http_image_urls_are_refused_without_the_opt_in(server):
    resp = chat(server["url"], image_content(f"{server['url']}/v1/models"), max_tokens=4)
    assert resp.status_code == 400 and "ALLOW_REMOTE_IMAGES" in resp.json()["message"], resp.text[:300]


def test_remote_images_only_with_the_opt_in():
    from medswift.infer.request_guard import media_refusal

    def body(url):
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": "Describe."}]}]}

    remote = "https://example.org/xray.png"
    assert media_refusal(body(remote), allow_remote=False) and media_refusal(body(remote), allow_remote=True) is None
    for local in ("/etc/hosts", "file:///etc/hosts", "etc/hosts", "aGVsbG8="):  # a path, or bare base64
        assert media_refusal(body(local), allow_remote=True), local
    assert media_refusal({"images": ["/etc/hosts"], "messages": []}, allow_remote=True)
    assert media_refusal(body("data:image/png;base64,aGVsbG8="), allow_remote=False) is None


def server_tree(root_pid: int) -> list[int]:
    """root_pid and every process descended from it."""
    parents = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat_file.parent.name)] = int(fields[1])
    tree, changed = {root_pid}, True
    while changed:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        changed, tree = grown != tree, grown
    return sorted(tree)


def test_api_key_is_in_no_process_list_and_no_log(server):
    """Last of the server tests: the log then holds the start-up (ms-swift logs its arguments) and every
    request above. The key reached the launcher through the environment (API_KEY)."""
    port = server["url"].rsplit(":", 1)[1]
    cmdlines = {}
    for pid in server_tree(server["proc"].pid):
        try:
            cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    assert any(f"--port {port}" in line for line in cmdlines.values()), cmdlines  # the server is among them
    leaking = {pid: line for pid, line in cmdlines.items() if API_KEY in line}
    assert not leaking, f"the API key is in the argv of {sorted(leaking)}"
    log = server["log"].read_text(errors="replace")
    assert "Uvicorn running" in log and "POST /v1/chat/completions" in log
    assert API_KEY not in log, [line[:200] for line in log.splitlines() if API_KEY in line]


# --------------------------------------------------------------------------- launcher guards (no server)
def dry_deploy(env: dict, *args: str, check: bool = True):
    defaults = {name: "" for name in ("API_KEY", "API_KEY_FILE", "HOST", "PORT", "SERVED_MODEL_NAME",
                                      "ALLOW_REMOTE_IMAGES", "MAX_NEW_TOKENS")}
    return run(["bash", LAUNCHER, *args], env={**SERVER_ENV, "DRY_RUN": "1", **defaults, **env}, check=check,
               timeout=120)


def server_argv(proc) -> list[str]:
    """The printed command from scripts/serve.py on (the environment assignments before it dropped)."""
    argv = shlex.split(proc.stdout.strip())
    (script,) = [i for i, word in enumerate(argv) if word.endswith("scripts/serve.py")]
    assert argv[script - 1] == PYTHON or argv[script - 1].endswith("python"), argv
    return argv[script:]


def test_dry_run_defaults_to_loopback(tiny_model):
    proc = dry_deploy({"NO_ADAPTER": "1", "MODEL": str(tiny_model)})
    argv = server_argv(proc)
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "8000"
    assert flag(argv, "--infer_backend") == "transformers" and flag(argv, "--max_new_tokens") == "512"
    assert flag(argv, "--model") == str(tiny_model) and "--adapters" not in argv
    # no key, no remote images, and the served name left to the server (the model folder's name)
    assert not {"--api_key", "--api_key_env", "--api_key_file", "--allow_remote_images",
                "--served_model_name"} & set(argv)


def test_dry_run_with_adapter_and_key(tiny_model, trained_adapter, tmp_path):
    proc = dry_deploy({"ADAPTER": str(trained_adapter), "HOST": "0.0.0.0", "PORT": "9001", "API_KEY": "s3cret",
                "SERVED_MODEL_NAME": "Qwen3-VL-8B-Instruct", "ALLOW_REMOTE_IMAGES": "1"})
    argv = server_argv(proc)
    assert flag(argv, "--adapters") == str(trained_adapter) and flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "9001" and flag(argv, "--api_key_env") == "API_KEY"
    assert flag(argv, "--served_model_name") == "Qwen3-VL-8B-Instruct" and "--allow_remote_images" in argv
    assert "s3cret" not in proc.stdout + proc.stderr  # the printed command names where the key is, not the key
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-from-file\n")
    from_file = dry_deploy({"ADAPTER": str(trained_adapter), "HOST": "0.0.0.0", "API_KEY_FILE": str(key_file)})
    assert flag(server_argv(from_file), "--api_key_file") == str(key_file)
    assert "s3cret" not in from_file.stdout + from_file.stderr


@pytest.mark.parametrize("args", [("--api_key", "k2"), ("--api_key=k2",)], ids=["separate", "joined"])
def test_a_key_on_the_command_line_is_refused(tiny_model, args):
    line = refused(dry_deploy({"NO_ADAPTER": "1", "MODEL": str(tiny_model)}, *args, check=False))
    assert "API_KEY" in line and "k2" not in line
    direct = run([PYTHON, str(ROOT / "scripts" / "serve.py"), *args], check=False, timeout=60)
    assert direct.returncode == 2 and direct.stderr.startswith("error: ") and "k2" not in direct.stderr


def test_key_file_mistakes_are_one_line(tiny_model, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    base = {"NO_ADAPTER": "1", "MODEL": str(tiny_model)}
    assert "not both" in refused(dry_deploy({**base, "API_KEY": "a", "API_KEY_FILE": str(empty)}, check=False))
    assert "empty" in refused(dry_deploy({**base, "API_KEY_FILE": str(empty)}, check=False))
    assert "readable" in refused(dry_deploy({**base, "API_KEY_FILE": str(tmp_path / "nope")}, check=False))
    assert "MAX_NEW_TOKENS" in refused(dry_deploy({**base, "MAX_NEW_TOKENS": "lots"}, check=False))


def test_public_host_without_api_key_stops(tiny_model):
    line = refused(dry_deploy({"NO_ADAPTER": "1", "MODEL": str(tiny_model), "HOST": "0.0.0.0"}, check=False))
    assert "API_KEY" in line


def test_host_flag_cannot_bypass_the_check(tiny_model):
    line = refused(dry_deploy({"NO_ADAPTER": "1", "MODEL": str(tiny_model)}, "--host", "0.0.0.0", check=False))
    assert "HOST" in line


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_is_one_line(tiny_model):
    line = refused(dry_deploy({"NO_ADAPTER": "1", "MODEL": str(tiny_model), "INFER_BACKEND": "vllm"}, check=False))
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

