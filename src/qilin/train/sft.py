"""The `sft` stage: supervised fine-tuning on conversations, loss on assistant tokens only.

The chat template (model/chat.py) wraps each assistant turn's content and its `<|im_end|>` in
`{% generation %}` markers; with `assistant_only_loss=True` TRL sets the labels of every other
token (system and user turns, role headers) to -100, so the model learns to answer, and to stop,
but is not trained to imitate the patient's questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.model.load import load_model, lora_config, merge_lora, save_model
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings, load_jsonl, train, trl_args, use_model_loss_on_cpu

ROLES = {"system", "user", "assistant"}


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/)")
    data: Path = doc('JSONL of {"messages": [{"role", "content"}]} conversations')
    train: TrainSettings = doc(
        "training hyper-parameters (Qilin-Med: LoRA r 8, alpha 32, LR 2e-5, 1 epoch; the tiny default "
        "model learns nothing at 2e-5, hence full fine-tuning at 1e-4 here)",
        lambda: TrainSettings(lr=1e-4, epochs=1.0))


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    if not run.model_is_complete():
        model, tokenizer = load_model(cfg.model)
        trainer = _trainer(model, tokenizer, load_jsonl(cfg.data, ["messages"], _check), cfg.train, run)
        metrics = train(trainer, run)
        run.write_metrics(metrics)
        save_model(merge_lora(trainer.model), tokenizer, run.model_dir)
    return run.finish(inputs={"model": cfg.model, "data": cfg.data}, seed=cfg.train.seed,
                      extra={"model": str(run.model_dir)})


def labelled_example(model, tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation exactly as this stage trains on it (-100 = no loss)."""
    import tempfile

    from datasets import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(model, tokenizer, Dataset.from_list([{"messages": messages}]), TrainSettings(),
                           RunFolder(tmp))
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


def _trainer(model, tokenizer, dataset, settings: TrainSettings, run: RunFolder):
    from trl import SFTConfig, SFTTrainer

    args = trl_args(SFTConfig, settings, run.checkpoints, assistant_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(settings.lora) if settings.lora.enabled else None)
    use_model_loss_on_cpu(trainer)
    return trainer
