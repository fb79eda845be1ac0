"""The `sft` stage: supervised fine-tuning on conversations, loss on assistant tokens only.

The chat template (model/chat.py) wraps each assistant turn's content and its `<|im_end|>` in
`{% generation %}` markers; with `assistant_only_loss=True` TRL sets the labels of every other
token (system and user turns, role headers) to -100, so the model learns to answer, and to stop,
but is not trained to imitate the patient's questions.

By default (`packing: bfd`) whole conversations are packed into rows of `train.max_length` tokens by
TRL's best-fit decreasing, and each attends only to itself: position_ids restart per conversation,
which gives a block-diagonal causal mask (train/packing.py). A conversation's loss is what it would be
alone; a step computes ~no padding. `packing: none` trains one conversation per row, padded. A packed
row holds several conversations, so `train.batch_size` counts rows, not conversations.

With `rag` set (retrieval-augmented fine-tuning), the first user turn of every conversation gets
the top passages of an index first, in the same layout as evaluation with retrieval
(qilin.rag.prompt), so the model learns to use what it is given. The augmented conversations are
written to `rag_sft.jsonl` in the run folder (what was trained on, and reused on resume) and the
retrieval counts to metrics.json under `rag`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qilin import dist
from qilin.config import doc
from qilin.errors import QilinError
from qilin.model.load import load_model, lora_config
from qilin.rag.prompt import MAX_CHARS
from qilin.runs import RunFolder, atomic_write_json, read_json
from qilin.train.common import TrainSettings, load_jsonl, save_trained, train, trl_args, use_model_loss_on_cpu

ROLES = {"system", "user", "assistant"}
Packing = Literal["bfd", "none"]
PACKING_HELP = ("bfd: whole conversations packed into rows of train.max_length tokens by best-fit decreasing "
                "(TRL), each attending only to itself (train/packing.py), little padding; none: one "
                "conversation per row, padded to the longest in the batch")
RAG_DATA = "rag_sft.jsonl"


@dataclass
class RagTraining:
    index: Path | None = doc("index folder (`qilin rag index`) to retrieve from; in a recipe, null = the rag "
                             "stage's index over the CPT corpus", None)
    k: int = doc("passages put before the first question of each conversation", 3)
    mode: str = doc("retrieval: bm25, dense or hybrid (as the index allows)", "bm25")
    max_chars: int = doc("characters kept of each passage", MAX_CHARS)
    drop_self: bool = doc("drop passages that repeat the conversation itself, which the CPT corpus contains "
                          "(qilin.rag.augment): otherwise the model learns to copy an answer that is never "
                          "in the index at test time", True)


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/)")
    data: Path = doc('JSONL of {"messages": [{"role", "content"}]} conversations')
    train: TrainSettings = doc(
        "training hyper-parameters (Qilin-Med: LoRA r 8, alpha 32, LR 2e-5, 1 epoch; the tiny default "
        "model learns nothing at 2e-5, hence full fine-tuning at 1e-4 here)",
        lambda: TrainSettings(lr=1e-4, epochs=1.0))
    packing: Packing = doc(PACKING_HELP, "bfd")
    rag: RagTraining | None = doc("retrieval-augmented fine-tuning (module docstring); null = plain SFT. Leave "
                                  "train.max_length room for the passages (~200 tokens at k 3)", None)


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    if not run.model_is_complete():
        data = cfg.data if cfg.rag is None else _with_passages(cfg, run)
        model, tokenizer = load_model(cfg.model, lora=cfg.train.lora)
        trainer = _trainer(model, tokenizer, load_jsonl(data, ["messages"], _check), cfg.train, run,
                           cfg.packing)
        metrics = train(trainer, run)
        if cfg.rag is not None:
            metrics["rag"] = read_json(run.path / (RAG_DATA + ".json"))
        run.write_metrics(metrics)
        save_trained(trainer, tokenizer, run.model_dir, cfg.train.lora)
    inputs = {"model": cfg.model, "data": cfg.data} | ({"rag_index": cfg.rag.index} if cfg.rag else {})
    return run.finish(inputs=inputs, seed=cfg.train.seed,
                      extra={"model": str(run.model_dir)})


def _with_passages(cfg: Config, run: RunFolder) -> Path:
    """The training conversations with their retrieved passages (written once; a resumed run reuses them)."""
    from qilin.rag.augment import augment_sft

    if cfg.rag.index is None:
        raise QilinError("sft.rag.index: no index given; build one with `qilin rag index` and pass its folder")
    out, stats = run.path / RAG_DATA, run.path / (RAG_DATA + ".json")

    def make() -> None:
        if not stats.is_file():  # written after the data: present = the data is complete
            atomic_write_json(stats, augment_sft(cfg.rag.index, cfg.data, out, cfg.rag.k, cfg.rag.mode,
                                                 cfg.rag.max_chars, cfg.rag.drop_self))

    dist.on_main(make)
    return out


def labelled_example(model, tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation exactly as this stage trains on it unpacked (-100 = no loss)."""
    import tempfile

    from datasets import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(model, tokenizer, Dataset.from_list([{"messages": messages}]), TrainSettings(),
                           RunFolder(tmp), "none")
        row = trainer.train_dataset[0]
    return row["input_ids"], row["labels"]


def _check(record: dict) -> str | None:
    messages = record["messages"]
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages):
        return "expected a list of {role: system|user|assistant, content: text}"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn: nothing to train on"
    return None


def _trainer(model, tokenizer, dataset, settings: TrainSettings, run: RunFolder, packing: Packing = "bfd"):
    from trl import SFTConfig, SFTTrainer

    from qilin.train.packing import isolate_rows

    packed = {"packing": True, "packing_strategy": "bfd"} if packing == "bfd" else {}
    args = trl_args(SFTConfig, settings, run.checkpoints, assistant_only_loss=True, **packed)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(settings.lora) if settings.lora.enabled else None)
    if packed:
        isolate_rows(trainer)
    use_model_loss_on_cpu(trainer)
    return trainer
