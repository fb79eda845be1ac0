"""The generation engines behind `qilin serve`: both batch concurrent requests, neither is ours.

- `TransformersEngine`: transformers' own continuous batching (`ContinuousBatchingManager`, from
  `model.init_continuous_batching`): one background thread runs the model over every active request
  at each step, admits waiting requests as soon as there is room in its paged KV cache, stops each
  request at its own stop tokens / `max_new_tokens`, and streams each request's tokens to its own
  handler. Measured on the tiny default on 2 CPU cores: 8 concurrent streams get about 5x the
  tokens/s of one (benchmarks/bench_serve.py). On CPU the KV cache is sized here
  (`kv_cache_tokens`): left to itself the manager probes free device memory, which on CPU took over a
  minute before the first token.
- `VllmEngine` (a GPU and vLLM installed): vLLM's asynchronous engine, with its own continuous
  batching and paged attention. It is not exercised by the tests: these machines have no GPU and no
  vLLM; the routes, retrieval and errors around it are the same code as for transformers.

Both expose `stream(ids, max_new_tokens, temperature, top_p)`: an async iterator of the tokens
generated so far (the whole list each time), ending with the stop token if one ended the answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)
# Sampling at temperature 0 means greedy (OpenAI's meaning). The batch samples every row with one
# multinomial draw, so a greedy row gets this temperature: logits / 1e-4 leave the top token with all
# the probability mass unless two logits lie within ~1e-3 of each other.
GREEDY_TEMPERATURE = 1e-4


def load_engine(model_dir: str | Path, backend: str, *, temperature: float, top_p: float, kv_cache_tokens: int):
    """(engine, tokenizer, context length) for a local model folder; backend auto|transformers|vllm."""
    from qilin.model.generate import backend_for

    engine = backend_for(backend)
    if engine == "vllm":
        return VllmEngine.load(model_dir, temperature=temperature, top_p=top_p)
    from qilin.model.load import load_model

    model, tokenizer = load_model(model_dir, dtype="float32")  # fp32: bf16 is 25-100x slower on these CPUs
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return TransformersEngine(model, tokenizer, temperature, top_p, kv_cache_tokens), tokenizer, context


class TransformersEngine:
    def __init__(self, model, tokenizer, temperature: float, top_p: float, kv_cache_tokens: int):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from qilin.model.chat import stop_token_ids

        self.stop_ids = stop_token_ids(tokenizer)
        # do_sample with temperature and top_p set to anything but None or 1.0 is what makes the manager
        # build per-request temperature / top_p processors; every request passes its own values.
        gen = GenerationConfig(do_sample=True, temperature=0.5, top_p=0.5, top_k=None, max_new_tokens=256,
                               eos_token_id=self.stop_ids, pad_token_id=tokenizer.pad_token_id)
        page = 64
        cb = ContinuousBatchingConfig(per_request_processors=True, page_size=page, max_batch_tokens=512,
                                      num_blocks=None if model.device.type == "cuda" else -(-kv_cache_tokens // page))
        model.eval()
        self.manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        self.manager.start()
        self.active = self.peak_active = 0  # requests in flight: the tests check that they overlap
        self.default_temperature, self.default_top_p = temperature, top_p

    async def stream(self, ids: list[int], max_new_tokens: int, temperature: float | None = None,
                     top_p: float | None = None) -> AsyncIterator[list[int]]:
        rid = "req-" + uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        self.manager.register_result_handler(rid, queue.put_nowait)  # called on this loop, thread-safely
        temperature = self.default_temperature if temperature is None else temperature
        top_p = self.default_top_p if top_p is None else top_p
        added = self.manager.add_request(ids, request_id=rid, max_new_tokens=max_new_tokens, streaming=True,
                                         eos_token_id=self.stop_ids, temperature=temperature or GREEDY_TEMPERATURE,
                                         top_p=float(top_p))
        if added is None:
            raise RuntimeError("the generation loop is not accepting requests")
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        finished = False
        try:
            while not finished:
                out = await queue.get()
                while not queue.empty() and not out.is_finished():  # outputs are cumulative: when the
                    out = queue.get_nowait()  # client side lags behind the batch, the latest one says all
                if out.error:
                    raise RuntimeError(f"generation failed: {out.error}")
                finished = out.is_finished()
                yield list(out.generated_tokens)
        finally:
            self.active -= 1
            if not finished:  # the client went away: free the request's slot in the batch
                self.manager.cancel_request(rid)

    def close(self) -> None:
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=10)


class VllmEngine:
    """vLLM's AsyncLLMEngine (see the module docstring: not run on these machines)."""

    def __init__(self, engine, tokenizer, temperature: float, top_p: float):
        from qilin.model.chat import stop_token_ids

        self.engine, self.stop_ids = engine, stop_token_ids(tokenizer)
        self.default_temperature, self.default_top_p = temperature, top_p
        self.active = self.peak_active = 0

    @classmethod
    def load(cls, model_dir, *, temperature: float, top_p: float):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.engine.async_llm_engine import AsyncLLMEngine

        from qilin.model.chat import ensure_chat_template
        from qilin.model.load import check_model_dir

        check_model_dir(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        ensure_chat_template(tokenizer)
        engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=str(model_dir), dtype="auto"))
        config_file = Path(model_dir) / "config.json"
        import json

        context = int(json.loads(config_file.read_text()).get("max_position_embeddings") or 2048)
        return cls(engine, tokenizer, temperature, top_p), tokenizer, context

    async def stream(self, ids: list[int], max_new_tokens: int, temperature: float | None = None,
                     top_p: float | None = None) -> AsyncIterator[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, stop_token_ids=self.stop_ids,
                                temperature=self.default_temperature if temperature is None else temperature,
                                top_p=self.default_top_p if top_p is None else top_p,
                                detokenize=False)  # the server decodes the token ids itself (Detokenizer)
        rid = "req-" + uuid.uuid4().hex
        finished = False
        try:
            async for out in self.engine.generate({"prompt_token_ids": ids}, params, rid):
                finished = out.finished
                tokens = list(out.outputs[0].token_ids)
                yield tokens
        finally:
            if not finished:
                await self.engine.abort(rid)

    def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown:
            shutdown()
