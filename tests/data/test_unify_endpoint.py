"""`unify` against a fake OpenAI-compatible server on 127.0.0.1: concurrency, resume, failures.

The server answers /v1/chat/completions after a fixed delay, so concurrency shows as wall time; each
segment carries a tag (段落N) that the server logs, so the test knows which segment every request
was about.
"""

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qilin import config
from qilin.data import unify
from qilin.errors import QilinError
from qilin.runs import read_json

TAG = re.compile(r"段落(\d+)")


def serve(handler) -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server on 127.0.0.1 (a free port) running `handler`; (server, its /v1 URL)."""
    # The default listen backlog (5) drops some of 16 simultaneous connects, and the kernel retries
    # them a second later: a stall that is the fake server's, not the client's.
    ThreadingHTTPServer.request_queue_size = 64
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


class FakeServer:
    """mode: ok | malformed (200 with a body that is no chat completion) | flaky (503 on each call's first try)."""

    def __init__(self, delay: float = 0.0, mode: str = "ok"):
        self.delay, self.mode, self.log, self.lock = delay, mode, [], threading.Lock()
        self.active = self.peak = 0  # requests being answered now / at most at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                kind = "answer" if "回答下面的医学问题" in prompt else "question"
                n = int(TAG.search(prompt).group(1))
                with server.lock:
                    first = (kind, n) not in {(k, m) for k, m, _ in server.log}
                    server.log.append((kind, n, time.time()))
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                time.sleep(server.delay)
                with server.lock:
                    server.active -= 1
                if server.mode == "flaky" and first:
                    return self._send(503, {"error": {"message": "busy, try again"}})
                if server.mode == "malformed":
                    return self._send(200, {"unexpected": True})
                text = f"段落{n}说的是哪种病？" if kind == "question" else f"段落{n}所述疾病需要及时就医。"
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, status, payload):
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-request
                    pass

            def log_message(self, *args):
                pass

        self.httpd, self.url = serve(Handler)

    def segments_asked(self) -> set[int]:
        with self.lock:
            return {n for _, n, _ in self.log}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw):
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def corpus(tmp_path, n: int):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"段落{i}：这种传染病可经飞沫传播，患者常有发热和咳嗽，应当及时就医。",
                                        "source": "web"}, ensure_ascii=False) + "\n" for i in range(n)),
                    encoding="utf-8")
    return path


def settings(url: str, **generator) -> dict:
    return {"kind": "openai", "base_url": url, "model": "fake", "retries": 1, "backoff": 0.01, "timeout": 10,
            **generator}


def args(out, data, url, **generator) -> list[str]:
    return [f"out={out}", f"data={data}"] + [f"generator.{k}={v}" for k, v in settings(url, **generator).items()]


def run_cli(argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "qilin.cli", "unify", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_concurrency_16_keeps_many_requests_in_flight_and_gives_the_same_pairs(tmp_path, server_factory):
    """Behaviour, not timing: with concurrency 16 the endpoint sees many requests at once (with 1, one),
    and the pairs are the same. The speed-up itself is measured by benchmarks, not asserted here."""
    data = corpus(tmp_path, 16)  # 32 requests
    peaks = {}
    for concurrency in (1, 16):
        server = server_factory(delay=0.3)
        unify.run(config.build(unify.Config, {"out": tmp_path / f"c{concurrency}", "data": data,
                                              "generator": settings(server.url, concurrency=concurrency)}))
        peaks[concurrency] = server.peak
    assert peaks[1] == 1 and peaks[16] >= 8, peaks
    pairs = [(tmp_path / f"c{c}" / "unified.jsonl").read_text(encoding="utf-8") for c in (1, 16)]
    assert pairs[0].count("\n") == 16 and sorted(pairs[0].splitlines()) == sorted(pairs[1].splitlines())


def test_a_killed_run_continues_without_asking_again_for_a_finished_segment(tmp_path, server_factory):
    server = server_factory(delay=0.05)
    data, out = corpus(tmp_path, 40), tmp_path / "unify"
    proc = run_cli(args(out, data, server.url, concurrency=2))
    results = out / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not results.is_file() or results.read_text().count("\n") < 10):
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup, as in a crash
    proc.communicate()
    finished = unify.read_results(results)
    assert 10 <= len(finished) < 40 and not (out / "manifest.json").exists()
    tags = {s["id"]: int(TAG.search(s["text"]).group(1)) for s in unify.make_segments(
        config.build(unify.Config, {"out": out, "data": data}))}
    done_tags = {tags[i] for i in finished}
    server.log.clear()
    unify.run(config.build(unify.Config, {"out": out, "data": data, "generator": settings(server.url, concurrency=2)}))
    assert not done_tags & server.segments_asked()  # not one call about a finished segment
    assert server.segments_asked() | done_tags == set(range(40))
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 40
    assert read_json(out / "manifest.json")["generator"].startswith("openai: fake")


def test_budget_unreachable_endpoint_and_malformed_reply_exit_2_and_keep_what_was_made(tmp_path, server_factory):
    data, out = corpus(tmp_path, 12), tmp_path / "unify"
    server = server_factory()
    proc = run_cli(args(out, data, server.url, concurrency=1, max_requests=9))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "budget" in err and "Traceback" not in err, err
    kept = (out / "results.jsonl").read_text(encoding="utf-8")
    assert kept.count("\n") == 4  # 9 requests = 4 segments of 2 calls, and one question

    closed = FakeServer()
    closed.close()  # a port that nothing listens on any more
    proc = run_cli(args(out, data, closed.url))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "unreachable" in err and closed.url in err and "Traceback" not in err, err
    assert (out / "results.jsonl").read_text(encoding="utf-8") == kept

    bad = server_factory(mode="malformed")
    proc = run_cli(args(out, data, bad.url))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "malformed reply" in err and "Traceback" not in err, err
    assert (out / "results.jsonl").read_text(encoding="utf-8") == kept


def test_a_busy_endpoint_is_retried_with_backoff(tmp_path, server_factory):
    server = server_factory(mode="flaky")
    data = corpus(tmp_path, 3)
    out = unify.run(config.build(unify.Config, {"out": tmp_path / "u", "data": data,
                                                "generator": settings(server.url, retries=2)}))
    assert len(server.log) == 12  # 3 segments x 2 calls x (503, then 200)
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 3
    with pytest.raises(QilinError, match="unreachable, failing or replying malformed after 1 tries"):
        unify.run(config.build(unify.Config, {"out": tmp_path / "v", "data": data,
                                              "generator": settings(server_factory(mode="flaky").url, retries=0)}))
