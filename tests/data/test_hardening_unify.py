"""Issue 14, item 4: `unify` against a faulty endpoint on 127.0.0.1 (Retry-After, cut-off bodies, a
damaged results.jsonl, Ctrl-C / SIGTERM while the endpoint hangs)."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from qilin import config
from qilin.data import generators, unify
from qilin.errors import QilinError
from qilin.runs import read_json

from test_unify_endpoint import corpus, serve  # the same corpus: segments tagged 段落N

TAG = re.compile(r"段落(\d+)")


class Endpoint:
    """`reply(kind, n, attempt)` -> (status, headers, body bytes, delay) decides every answer."""

    def __init__(self, reply):
        self.reply, self.log, self.lock = reply, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                kind = "answer" if "回答下面的医学问题" in prompt else "question"
                n = int(TAG.search(prompt).group(1))
                with server.lock:
                    attempt = sum(1 for k, m, _ in server.log if (k, m) == (kind, n))
                    server.log.append((kind, n, time.time()))
                status, headers, data, delay = server.reply(kind, n, attempt)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                 **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd, self.url = serve(Handler)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(kind, n, delay=0.0):
    text = f"段落{n}说的是哪种病？" if kind == "question" else f"段落{n}所述疾病需要及时就医。"
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return 200, {}, json.dumps(body, ensure_ascii=False).encode(), delay


@pytest.fixture
def endpoint():
    made: list[Endpoint] = []
    yield lambda reply: made.append(Endpoint(reply)) or made[-1]
    for e in made:
        e.close()


def cfg(tmp_path, data, url, name="u", **generator):
    return config.build(unify.Config, {"out": tmp_path / name, "data": data, "generator": {
        "kind": "openai", "base_url": url, "model": "fake", "retries": 2, "backoff": 0.01, "timeout": 20,
        **generator}})


def test_retry_after_is_honoured(tmp_path, endpoint):
    def reply(kind, n, attempt):
        if attempt == 0:
            return 429, {"Retry-After": "1"}, b'{"error": {"message": "slow down"}}', 0
        return ok(kind, n)

    server = endpoint(reply)
    out = unify.run(cfg(tmp_path, corpus(tmp_path, 1), server.url, concurrency=1))
    assert len(server.log) == 4
    assert server.log[1][2] - server.log[0][2] >= 0.95  # backoff alone would be ~0.01 s
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 1
    server.reply = lambda kind, n, attempt: (503, {"Retry-After": "3600"}, b"{}", 0)
    with pytest.raises(QilinError, match="asks to wait 3600 s"):
        unify.run(cfg(tmp_path, corpus(tmp_path, 1), server.url, name="v"))
    assert generators.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past


def test_cut_off_and_malformed_bodies_are_retried_then_one_line(tmp_path, endpoint):
    def reply(kind, n, attempt):
        status, headers, data, delay = ok(kind, n)
        if attempt == 0:
            return status, headers, data[:40], delay  # a whole HTTP reply whose JSON is cut off
        if attempt == 1:
            return status, headers, b'{"unexpected": true}', delay
        return status, headers, data, delay

    server = endpoint(reply)
    data = corpus(tmp_path, 3)
    out = unify.run(cfg(tmp_path, data, server.url, concurrency=2))
    assert len(server.log) == 3 * 2 * 3
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 3
    server.reply = lambda kind, n, attempt: ok(kind, n)[:2] + (b'{"id": "x", "choi', 0)
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "unify", f"out={tmp_path / 'w'}", f"data={data}",
                           "generator.kind=openai", f"generator.base_url={server.url}", "generator.model=fake",
                           "generator.retries=1", "generator.backoff=0.01"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "malformed reply" in proc.stderr and "after 2 tries" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_damaged_lines_of_results_are_skipped_counted_and_redone(tmp_path, endpoint):
    server = endpoint(lambda kind, n, attempt: ok(kind, n))
    data = corpus(tmp_path, 6)
    with pytest.raises(QilinError, match="budget"):
        unify.run(cfg(tmp_path, data, server.url, concurrency=1, max_requests=8))
    results = tmp_path / "u" / "results.jsonl"
    lines = results.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4
    damaged = json.loads(lines[1])["id"]
    lines[1] = '{"id": "' + damaged + '", "sta\n'  # a line damaged in the middle of the file
    lines[2] = "\x00\x00 not json\n"
    results.write_text("".join(lines), encoding="utf-8")
    server.log.clear()
    out = unify.run(cfg(tmp_path, data, server.url, concurrency=1))
    assert len({n for _, n, _ in server.log}) == 4  # the 2 damaged and the 2 never done, no other
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 6
    assert read_json(out / unify.SUMMARY)["damaged_result_lines_redone"] == 2
    assert all(json.loads(x) for x in results.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_once_with_no_further_request_and_keeps_what_was_done(tmp_path, endpoint, sig):
    def reply(kind, n, attempt):
        return ok(kind, n, delay=0.0 if n < 3 else 60.0)  # from segment 3 on the endpoint hangs

    server = endpoint(reply)
    data, out = corpus(tmp_path, 40), tmp_path / "u"
    proc = subprocess.Popen([sys.executable, "-m", "qilin.cli", "unify", f"out={out}", f"data={data}",
                             "generator.kind=openai", f"generator.base_url={server.url}", "generator.model=fake",
                             "generator.concurrency=2", "generator.timeout=120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and sum(1 for _, n, _ in server.log if n >= 3) < 2:
        time.sleep(0.05)  # both workers now hang on the endpoint
    before = (out / "results.jsonl").read_text(encoding="utf-8")
    sent = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    seconds = time.time() - sent
    print(f"{sig.name}: stopped in {seconds:.2f} s, {len(server.log)} requests in all")
    assert seconds < 5 and proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not [t for _, _, t in server.log if t > sent]  # no request after the signal
    assert (out / "results.jsonl").read_text(encoding="utf-8") == before and before.count("\n") == 3
    assert not (out / "manifest.json").exists()
