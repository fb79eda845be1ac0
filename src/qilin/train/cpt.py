"""The `cpt` stage: domain continued pre-training (Qilin-Med's DCPT, METHODS.md 1).

Causal LM loss on every token. Documents are joined with EOS and cut into fixed blocks: TRL's
SFTTrainer appends the tokenizer's EOS to each document, then `packing_strategy="wrapped"`
concatenates the tokenized documents and cuts them every `block_size` tokens, ignoring document
boundaries, as Qilin-Med's `group_texts` does. (TRL's default "bfd" instead keeps documents whole
and truncates any longer than a block.) Unlike `group_texts`, the tail shorter than a block is
kept, padded, once per 1,000 documents (TRL packs in map batches of 1,000).
Attention runs across the document boundaries inside a block, again as in Qilin-Med.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.model.load import lora_config
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings, load_jsonl, run_trainer_stage, train, trl_args, use_model_loss_on_cpu


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/)")
    data: Path = doc('JSONL of {"text"} documents (medical text, QA and triples rendered as text)')
    block_size: int = doc("tokens per training block (Qilin-Med: 1024)", 512)
    train: TrainSettings = doc("training hyper-parameters", lambda: TrainSettings(lr=2e-4, epochs=1.0))


def run(cfg: Config) -> Path:
    return run_trainer_stage(cfg, lambda model, tokenizer, run: _trainer(
        model, tokenizer, load_jsonl(cfg.data, ["text"]), cfg.block_size, cfg.train, run))


def pretrain(model, tokenizer, data: Path, block_size: int, settings: TrainSettings, run: RunFolder):
    """Causal-LM training on `data` in EOS-joined blocks -> (the trainer, train metrics).

    Shared with the `base` stage, which pre-trains the tiny model on general text the same way.
    """
    trainer = _trainer(model, tokenizer, load_jsonl(data, ["text"]), block_size, settings, run)
    return trainer, train(trainer, run)


def _trainer(model, tokenizer, documents, block_size: int, settings: TrainSettings, run: RunFolder):
    from trl import SFTConfig, SFTTrainer

    args = trl_args(SFTConfig, settings, run.checkpoints, max_length=block_size, packing=True,
                    packing_strategy="wrapped", dataset_text_field="text")
    trainer = SFTTrainer(model=model, args=args, train_dataset=documents, processing_class=tokenizer,
                         peft_config=lora_config(settings.lora) if settings.lora.enabled else None)
    use_model_loss_on_cpu(trainer)
    return trainer
