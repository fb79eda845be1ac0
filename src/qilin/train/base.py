"""The `base` stage: the model every later stage starts from.

Either the user's own Hugging Face model (`model:`; nothing is trained or copied, the manifest
points at it), or the embedded default: a byte-level BPE tokenizer trained on the corpus, a tiny
Qwen2 (model/tiny.py) initialised from `train.seed`, and a brief pre-training on general Chinese
text, done exactly as the `cpt` stage does it (`cpt.pretrain`), so that the later medical stages
start from a model that has seen the language, not from noise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qilin import dist
from qilin.config import doc
from qilin.errors import QilinError
from qilin.model.load import check_model_dir, remote_code_allowed
from qilin.model.tiny import TinyConfig, make_tiny_model
from qilin.runs import RunFolder, iter_jsonl
from qilin.train import cpt
from qilin.train.common import TrainSettings, save_trained


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path | None = doc("a local Hugging Face causal-LM folder to use as is; unset = build the tiny default",
                             None)
    pretrain_data: Path | None = doc('JSONL of {"text"} general text to pre-train the tiny model on', None)
    corpus: list[Path] | None = doc('JSONL files ({"text"} or {"messages"}) the tokenizer is trained on; '
                                    'unset = pretrain_data alone', None)
    corpus_skip_sources: list[str] = doc("sources (the `source` field of corpus items) the tokenizer is not "
                                         "trained on: the demo's FICTIONAL facts, whose invented names no real "
                                         "model's tokenizer has seen (the recipe fills in every source of an "
                                         "optional group the data stage includes)", [])
    vocab_size: int = doc("tokenizer vocabulary size, special tokens included", 8000)
    block_size: int = doc("tokens per pre-training block", 512)
    tiny: TinyConfig = doc("shape of the tiny default model", lambda: TinyConfig())
    train: TrainSettings = doc("pre-training hyper-parameters (a brief pass; from-scratch models need a high LR)",
                               lambda: TrainSettings(lr=1e-3, epochs=1.0, warmup_ratio=0.05))


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    if cfg.model is not None:
        _check_user_model(cfg.model)
        return run.finish(inputs={"model": cfg.model}, seed=None, extra={"model": str(cfg.model)})
    if cfg.pretrain_data is None:
        raise QilinError("base: set `model` (a model folder) or `pretrain_data` (text to pre-train the tiny model)")
    if cfg.block_size > cfg.tiny.max_position:
        raise QilinError(f"base: block_size {cfg.block_size} exceeds tiny.max_position {cfg.tiny.max_position}")
    corpus = cfg.corpus or [cfg.pretrain_data]
    if not run.model_is_complete():
        tokenizer = _tokenizer(corpus, cfg.vocab_size, run, set(cfg.corpus_skip_sources))
        model = make_tiny_model(tokenizer, cfg.tiny, cfg.train.seed)
        trainer, metrics = cpt.pretrain(model, tokenizer, cfg.pretrain_data, cfg.block_size, cfg.train, run)
        run.write_metrics(metrics)
        save_trained(trainer, tokenizer, run.model_dir)
    inputs = {"pretrain_data": cfg.pretrain_data, **{f"corpus.{i}": p for i, p in enumerate(corpus)}}
    return run.finish(inputs=inputs, seed=cfg.train.seed, extra={"model": str(run.model_dir)})


def _check_user_model(path: Path) -> None:
    """Load the config and tokenizer (not the weights): a wrong folder fails here, not three stages on."""
    from transformers import AutoConfig, AutoTokenizer

    check_model_dir(path)  # refuses a model whose code is not in transformers unless the user allowed it
    remote = remote_code_allowed()
    try:
        AutoConfig.from_pretrained(str(path), trust_remote_code=remote)
        AutoTokenizer.from_pretrained(str(path), trust_remote_code=remote)
    except (OSError, ValueError, KeyError) as e:
        raise QilinError(f"{path}: cannot load its config or tokenizer ({str(e).splitlines()[0]})") from None


def _tokenizer(corpus: list[Path], vocab_size: int, run: RunFolder, skip: set[str]):
    """Train the tokenizer once; a resumed run must reuse it (its checkpoints index its vocabulary).

    It lives under checkpoints/ until the model (which carries a copy) is saved and `finish` drops it.
    """
    from transformers import AutoTokenizer

    from qilin.model.chat import ensure_chat_template
    from qilin.model.tokenizer import train_tokenizer

    done = run.checkpoints / "tokenizer"

    def make() -> None:
        if done.is_dir():
            return
        tmp = run.checkpoints / ".tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        train_tokenizer(_corpus_texts(corpus, skip), vocab_size, tmp)
        os.replace(tmp, done)

    dist.on_main(make)  # one tokenizer, which every process of a launch then loads
    tokenizer = AutoTokenizer.from_pretrained(str(done))
    ensure_chat_template(tokenizer, own=True)
    return tokenizer


def _corpus_texts(paths: list[Path], skip: set[str] = frozenset()) -> Iterator[str]:
    """Every text of the corpus files: `text`, or the contents of each turn of `messages`; items of the
    `skip` sources left out. Why the demo's invented facts are: repeated a hundred times, each invented
    name would become one token of its own, whose embedding starts untrained, instead of the ordinary
    sub-words a real tokenizer splits a new name into; the knowledge probes would then measure how far
    those fresh embeddings moved rather than whether the facts went in."""
    for path in paths:
        for _, record in iter_jsonl(path, "corpus file"):
            if record.get("source") in skip:
                continue
            if isinstance(record.get("text"), str):
                yield record["text"]
            for message in record.get("messages") or []:
                yield message.get("content", "")
