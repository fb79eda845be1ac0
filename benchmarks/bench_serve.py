"""Serving under load: `qilin serve` on the embedded default, driven by concurrent streaming clients.

The server runs as its own process (`qilin serve`, as a user starts it); the clients are the official
`openai` async client, streaming, `max_tokens` 64, questions from a fixed list, temperature 0 (greedy) on an
untrained model and 1 on a trained one (see --temperature).
Two measurements:

1. load: 64 requests from 16 concurrent clients -> requests/s, tokens/s (completion tokens the server
   reports in `usage`), time to first token (first content chunk) and total latency, p50 / p95, failures;
2. scaling: the same requests from 1 client, then from 8 concurrent clients -> `ratio N.NNx`, the
   tokens/s of 8 over 1 (batching works when it is well above 1; the target is >= 3x).

The model: `--model DIR`, else the demo's final model (runs/qilin-med/04-dpo/model) if it is there,
else a randomly initialised model of the embedded default's shape (5.3M parameters, a tokenizer trained
here on the bundled textbook). An untrained model's answers never end early, so every request runs to
max_tokens; a trained one stops where its answer ends, so its tokens/s counts fewer, real tokens.

    python benchmarks/bench_serve.py [--model DIR] [--requests 64] [--clients 16] [--max-tokens 64]

Timings on a shared 2-core machine vary from run to run; compare the ratio, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE = 0.0  # set in main()
DEMO_MODEL = ROOT / "runs" / "qilin-med" / "04-dpo" / "model"
QUESTIONS = ["高血压患者平时应注意什么？", "感冒发烧应该怎么办？", "糖尿病有哪些常见症状？", "胃炎患者饮食上要注意什么？",
             "失眠有什么办法改善？", "哮喘发作时怎么处理？", "贫血的原因有哪些？", "痛风患者能喝啤酒吗？",
             "偏头痛怎么缓解？", "肺炎会传染吗？", "乙肝是怎么传播的？", "儿童腹泻如何护理？",
             "孕妇可以吃感冒药吗？", "胸闷气短是什么原因？", "老年人骨质疏松怎么预防？", "过敏性鼻炎如何治疗？"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model folder (default: the demo's final model, else a random tiny one)")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=None,
                   help="default: 0 (greedy) for an untrained model; 1 for a trained one, whose greedy answers to "
                        "these questions are a few tokens long (the ratio would then measure prompts, not generation)")
    p.add_argument("--scaling-requests", type=int, default=8, help="requests per client in the 1-vs-8 comparison")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, what = pick_model(args.model, Path(tmp))
        global TEMPERATURE
        TEMPERATURE = args.temperature if args.temperature is not None else (0.0 if "randomly" in what else 1.0)
        port = free_port()
        server = start_server(model, port, args.max_tokens)
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"model: {what}; server: qilin serve (transformers continuous batching, "
                  f"{server_env()['OMP_NUM_THREADS']} torch threads), streaming, max_tokens "
                  f"{args.max_tokens}, temperature {TEMPERATURE:g}")
            asyncio.run(run_load(url, 2, 1, args.max_tokens))  # warm-up
            stats = asyncio.run(run_load(url, args.requests, args.clients, args.max_tokens))
            report(f"load: {args.requests} requests, {args.clients} concurrent clients", stats)
            one = asyncio.run(run_load(url, args.scaling_requests, 1, args.max_tokens))
            eight = asyncio.run(run_load(url, args.scaling_requests * 8, 8, args.max_tokens))
            report(f"1 client, {args.scaling_requests} requests", one)
            report(f"8 clients, {args.scaling_requests * 8} requests", eight)
            print(f"ratio {eight['tokens_s'] / one['tokens_s']:.2f}x  (tokens/s of 8 concurrent streaming clients "
                  f"over 1; failures: {stats['failures'] + one['failures'] + eight['failures']})")
        finally:
            server.terminate()
            server.wait(timeout=30)


def pick_model(model: Path | None, tmp: Path) -> tuple[Path, str]:
    if model is not None:
        return model, str(model)
    if DEMO_MODEL.is_dir():
        return DEMO_MODEL, f"the demo's final model ({DEMO_MODEL.relative_to(ROOT)})"
    from qilin.model.load import save_model
    from qilin.model.tiny import TinyConfig, make_tiny_model
    from qilin.model.tokenizer import train_tokenizer

    text = (ROOT / "data" / "medicalgpt_samples" / "infectious_disease_textbook.txt").read_text(encoding="utf-8")
    tokenizer = train_tokenizer([line for line in text.splitlines() if line.strip()], 8000, tmp / "tokenizer")
    model = make_tiny_model(tokenizer, TinyConfig(), seed=0)
    n = sum(p.numel() for p in model.parameters())
    return save_model(model, tokenizer, tmp / "model"), f"randomly initialised embedded default ({n / 1e6:.1f}M)"


def server_env() -> dict:
    """The server's environment: torch threads from OMP_NUM_THREADS, 1 unless set. On a shared 2-core
    machine two threads per process spin against other processes' threads: measured here, generation
    ran 8x slower with 2 threads than with 1 while other jobs were running."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, max_tokens: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qilin.cli", "serve", "--model", str(model), "--port", str(port),
           "--max-tokens", str(max_tokens), "--name", "bench"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env())
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"qilin serve exited with code {server.returncode}: {' '.join(cmd)}")
            time.sleep(0.5)
    server.kill()
    raise SystemExit("qilin serve did not answer /health within 300 s")


async def run_load(url: str, n: int, clients: int, max_tokens: int) -> dict:
    """n streamed requests, at most `clients` in flight; per-request TTFT, latency and tokens."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(QUESTIONS[i % len(QUESTIONS)])
    done: list[tuple[float, float, int]] = []
    failures = [0]

    async def worker():
        while not queue.empty():
            question = queue.get_nowait()
            try:
                done.append(await one_request(client, question, max_tokens))
            except Exception as e:  # noqa: BLE001 - counted and shown: a failed request is a result here
                failures[0] += 1
                print(f"  failed: {type(e).__name__}: {e}", file=sys.stderr)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    return {"wall": wall, "requests": len(done), "failures": failures[0], "ttft": [d[0] for d in done],
            "latency": [d[1] for d in done], "tokens": sum(d[2] for d in done),
            "tokens_s": sum(d[2] for d in done) / wall}


async def one_request(client, question: str, max_tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": question}],
                                                  max_tokens=max_tokens, temperature=TEMPERATURE, stream=True,
                                                  stream_options={"include_usage": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - start
    return (first if first is not None else total), total, tokens


def report(label: str, s: dict) -> None:
    def pct(xs, q):
        return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else (xs or [0])[0]

    print(f"{label}: {s['requests'] / s['wall']:.2f} requests/s, {s['tokens_s']:.1f} tokens/s "
          f"({s['tokens']} completion tokens in {s['wall']:.1f} s); time to first token p50 {pct(s['ttft'], 50):.3f} s "
          f"p95 {pct(s['ttft'], 95):.3f} s; latency p50 {pct(s['latency'], 50):.2f} s p95 {pct(s['latency'], 95):.2f} s; "
          f"failures {s['failures']}")


if __name__ == "__main__":
    main()
