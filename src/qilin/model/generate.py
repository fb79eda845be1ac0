"""THE sampling interface: N answers per chat prompt, through vLLM when it is installed (and a GPU is
there to run it), through the model runtime (model/runtime.py, transformers' batched `generate`)
otherwise. The engine choice (`backend_for`) and the decoding rules live here and nowhere else.

Rejection sampling (train/rejection.py) calls `sample(model_dir, prompts, settings)`, unification's
local generator `chat_generator(...)`; neither needs to know which engine ran. Both engines see the same inputs: each prompt is rendered with the model's
chat template (model/chat.py) and ends with the assistant header, and generation stops at the end of
the assistant turn (`<|im_end|>`) or at EOS.

The transformers path repeats every prompt N times and batches the copies, left-padded (model/runtime.py explains
why left padding keeps a padded row identical to an unpadded one); the order of the answers is
deterministic for a given seed on a given machine.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.errors import QilinError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "vllm", "transformers")


@dataclass
class Sampling:
    n: int = doc("answers sampled per prompt", 4)
    temperature: float = doc("softmax temperature (ChiMed-GPT style rejection sampling: 0.8-1.0)", 0.9)
    top_p: float = doc("nucleus sampling: smallest set of tokens whose probability reaches top_p", 0.9)
    max_new_tokens: int = doc("longest answer, in new tokens", 96)
    batch_size: int = doc("sequences generated together (transformers engine; vLLM schedules its own)", 32)
    seed: int = doc("sampling seed: same seed, same model, same machine -> same answers", 0)
    backend: str = doc("sampling engine: auto (vLLM if installed and a GPU is present, else transformers), "
                       "vllm, transformers", "auto")


def backend_for(requested: str) -> str:
    """The engine that `requested` resolves to on this machine."""
    if requested not in BACKENDS:
        raise QilinError(f"sampling backend {requested!r}: expected one of {', '.join(BACKENDS)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if requested == "vllm" and not has_vllm:
        raise QilinError("sampling backend 'vllm' requested but vllm is not installed (pip install vllm)")
    if requested == "auto":
        return "vllm" if has_vllm and _has_cuda() else "transformers"
    return requested


def sample(model_dir: str | Path, prompts: list[str], settings: Sampling) -> list[list[str]]:
    """`settings.n` sampled answers (new text only) for every user prompt, in prompt order."""
    engine = backend_for(settings.backend)
    log.info("sampling %d x %d answers with %s (temperature %.2f, top_p %.2f)", len(prompts), settings.n, engine,
             settings.temperature, settings.top_p)
    if not prompts:
        return []
    if engine == "vllm":
        return _sample_vllm(Path(model_dir), prompts, settings)
    return _sample_transformers(Path(model_dir), prompts, settings)


def chat_generator(model_dir: str | Path, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                   backend: str = "auto"):
    """A function batch-of-conversations -> one sampled reply each, on the engine `backend` resolves to
    (unification's local generator). Same decoding rules as `sample`: the model's chat template, stop at
    the end of the assistant turn or EOS, top_p alone decides the nucleus."""
    engine = backend_for(backend)
    log.info("local generator %s with %s (temperature %.2f, top_p %.2f)", model_dir, engine, temperature, top_p)
    if engine == "vllm":
        return _vllm_chat(Path(model_dir), temperature, top_p, max_new_tokens, seed)
    import torch

    from qilin.model.chat import prompt_text
    from qilin.model.runtime import Decoding, load_lm

    lm = load_lm(model_dir)
    torch.manual_seed(seed)  # once: each batch continues the same random stream
    decoding = Decoding(do_sample=True, temperature=temperature, top_p=top_p)

    def generate(batch: list[list[dict]]) -> list[str]:
        prompts = [prompt_text(lm.tokenizer, messages) for messages in batch]
        return lm.generate(prompts, max_new_tokens, len(prompts), decoding)

    return generate


def _vllm_chat(model_dir: Path, temperature: float, top_p: float, max_new_tokens: int, seed: int):
    """pragma: no cover - needs vLLM and a GPU."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from qilin.model.chat import ensure_chat_template, prompt_text, stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ensure_chat_template(tokenizer)
    llm = LLM(model=str(model_dir), seed=seed, dtype="auto")
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                            stop_token_ids=stop_token_ids(tokenizer), seed=seed)

    def generate(batch: list[list[dict]]) -> list[str]:
        prompts = [prompt_text(tokenizer, messages) for messages in batch]
        return [r.outputs[0].text for r in llm.generate(prompts, params, use_tqdm=False)]

    return generate


def chat_prompts(tokenizer, prompts: list[str]) -> list[str]:
    """Each user prompt as the text the model continues: the chat template plus the assistant header."""
    from qilin.model.chat import prompt_text

    return [prompt_text(tokenizer, [{"role": "user", "content": p}]) for p in prompts]


def _sample_transformers(model_dir: Path, prompts: list[str], settings: Sampling) -> list[list[str]]:
    """Every prompt repeated N times and batched through the one runtime (model/runtime.py)."""
    from qilin.model.runtime import Decoding, load_lm

    lm = load_lm(model_dir)
    rendered = chat_prompts(lm.tokenizer, prompts)
    copies = [i for i in range(len(prompts)) for _ in range(settings.n)]  # prompt index of every sequence
    decoding = Decoding(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    texts = lm.generate([rendered[c] for c in copies], settings.max_new_tokens, settings.batch_size, decoding)
    out: list[list[str]] = [[] for _ in prompts]
    for c, text in zip(copies, texts):
        out[c].append(text)
    del lm
    return out


def _sample_vllm(model_dir: Path, prompts: list[str], settings: Sampling) -> list[list[str]]:
    """vLLM's engine: continuous batching and paged attention, typically an order of magnitude faster
    than `generate` for thousands of samples. The engine is torn down afterwards so that the training
    that follows gets the GPU memory back."""
    import gc

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from qilin.model.chat import ensure_chat_template, stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ensure_chat_template(tokenizer)
    llm = LLM(model=str(model_dir), seed=settings.seed, dtype="auto")
    params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_new_tokens, stop_token_ids=stop_token_ids(tokenizer),
                            seed=settings.seed)
    results = llm.generate(chat_prompts(tokenizer, prompts), params)
    out = [[c.text for c in r.outputs] for r in results]
    del llm
    gc.collect()
    if _has_cuda():
        import torch

        torch.cuda.empty_cache()
    return out


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
