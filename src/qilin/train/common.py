"""What every training stage shares: hyper-parameters, the TRL config builder, history, resume.

Stages stay thin over TRL: each builds its trainer with `trl_args(...)` and calls `train(trainer,
run)`, which resumes from the run folder's newest checkpoint, keeps `history.json` current at every
log (a killed run keeps its curve) and measures training throughput in tokens/s.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.errors import InputError, QilinError
from qilin.model.load import LoraSettings
from qilin.runs import RunFolder, iter_jsonl


@dataclass
class TrainSettings:
    lr: float = doc("peak learning rate (AdamW)", 2e-4)
    epochs: float = doc("passes over the training data (ignored when max_steps > 0)", 1.0)
    max_steps: int = doc("optimizer steps to run; -1 = as many as `epochs` needs", -1)
    batch_size: int = doc("sequences (or preference pairs) per device per micro-batch", 8)
    grad_accum: int = doc("micro-batches per optimizer step (effective batch = batch_size x grad_accum)", 1)
    warmup_ratio: float = doc("fraction of the steps spent warming the learning rate up from 0, in [0, 1)", 0.05)
    weight_decay: float = doc("AdamW weight decay", 0.01)
    scheduler: str = doc("learning-rate schedule after warm-up: cosine, linear, constant_with_warmup, ...",
                         "cosine")
    max_length: int = doc("longest training sequence in tokens; longer examples are cut at the end", 512)
    logging_steps: int = doc("steps between two history.json entries", 10)
    save_steps: int = doc("steps between two resumable checkpoints", 200)
    seed: int = doc("seed for weight init, data order and dropout: same seed, same model", 42)
    lora: LoraSettings = doc("LoRA instead of full fine-tuning", lambda: LoraSettings())


def trl_args(cls, settings: TrainSettings, out_dir: str | Path, **extra):
    """A TRL config (SFTConfig, DPOConfig, ...) from `settings`; `extra` adds or overrides fields.

    TRL defaults to bf16 and gradient checkpointing even on CPU, ~10x slower there (STACK.md 1):
    both are off unless a GPU can use bf16. Checkpoints carry optimizer and RNG state so that a
    resumed run ends with the same weights as an uninterrupted one.
    """
    import torch

    cuda = torch.cuda.is_available()
    kwargs = dict(
        output_dir=str(out_dir),
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the steps
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.scheduler,
        max_length=settings.max_length,
        logging_steps=settings.logging_steps,
        logging_first_step=True,  # the untrained loss anchors the curve
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False,  # transformers 5 name of gradient_checkpointing
        use_cpu=not cuda,
        report_to="none",
        include_num_input_tokens_seen="non_padding",  # padding is not training signal: tokens/s counts text
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trained parameter takes part in the loss; the search costs a pass
    )
    kwargs.update(extra)
    return cls(**kwargs)


def history_callback(run: RunFolder):
    """A TrainerCallback that writes `run`/history.json at every log and times this session.

    The class is built here, not at module level, so that importing a stage (for `--help`) does
    not import transformers.
    """
    from transformers import TrainerCallback

    class HistoryCallback(TrainerCallback):
        seconds = tokens = 0

        def on_train_begin(self, args, state, control, **kw):
            # Called after a checkpoint's state is restored: count only what this session trains.
            self.started, self.tokens_at_start = time.time(), state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kw):
            # Rebuilt from the Trainer's own log history, which a resumed run restores from its checkpoint.
            run.write_history([_history_entry(h) for h in state.log_history if "loss" in h])

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.time() - self.started
            self.tokens = state.num_input_tokens_seen - self.tokens_at_start

    return HistoryCallback()


def train(trainer, run: RunFolder) -> dict:
    """Train (resuming from `run`'s newest checkpoint if any); returns the `train.*` metrics."""
    history = history_callback(run)
    trainer.add_callback(history)
    checkpoint = run.last_checkpoint()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return {
        "train.loss_final": losses[-1] if losses else None,
        "train.steps": state.global_step,
        "train.tokens": state.num_input_tokens_seen,
        "train.tokens_per_second": round(history.tokens / history.seconds, 1) if history.seconds else None,
        "train.seconds": round(history.seconds, 1),
    }


def save_trained(trainer, tokenizer, out_dir: Path) -> Path:
    """Save the trained model, a LoRA adapter merged, as an ordinary Hugging Face folder (load.save_model).

    In one plain process it is saved straight from memory. Under a multi-process launch, or DeepSpeed
    or FSDP even in one process, the weights in memory may be shards (ZeRO-3), so every process takes
    part in the Trainer's own save, which gathers them and writes from the main process; the main
    process then reloads those files (an adapter onto its base model, which merges it) and saves the
    result the same way.
    """
    from qilin import dist
    from qilin.model.load import save_model

    sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)
    if dist.world_size() == 1 and not sharded:
        return save_model(trainer.model, tokenizer, out_dir)
    staged = out_dir.with_name(f".{out_dir.name}.trainer")
    trainer.save_model(str(staged))

    def merge_and_save() -> None:
        save_model(_reload(trainer, staged), tokenizer, out_dir)
        shutil.rmtree(staged, ignore_errors=True)

    dist.on_main(merge_and_save)
    return out_dir


def _reload(trainer, staged: Path):
    """The model the Trainer saved to `staged`, LoRA merged, in the main process's memory."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if not isinstance(model, PeftModel):
        return type(model).from_pretrained(staged)
    inner = model.get_base_model()  # its config keeps what the stage set (e.g. a reward head's num_labels)
    base = type(inner).from_pretrained(model.peft_config["default"].base_model_name_or_path, config=inner.config)
    return PeftModel.from_pretrained(base, staged).merge_and_unload()


def use_model_loss_on_cpu(trainer) -> None:
    """On CPU, compute the SFT loss with the model's own cross-entropy instead of TRL's fused LM head.

    TRL 1.16's SFTTrainer patches the model with a tiled LM head that also computes entropy and
    top-1 accuracy for its logs. It saves GPU memory on large vocabularies, but on CPU it doubles
    the tiny model's step time (2.0 s vs 1.05 s at 8 x 512 tokens). The loss is the same
    token-mean cross-entropy over labels != -100; only TRL's entropy/accuracy log columns go.
    """
    import types

    import torch
    from transformers import Trainer

    if not torch.cuda.is_available():
        trainer.compute_loss = types.MethodType(Trainer.compute_loss, trainer)


def load_jsonl(path: str | Path, fields: list[str], check=None):
    """A datasets.Dataset with just `fields` from a JSONL file.

    A missing field is an InputError naming the line; so is any message returned by `check(record)`.
    """
    from datasets import Dataset

    rows = []
    for n, record in iter_jsonl(path):
        for name in fields:
            if record.get(name) in (None, "", []):
                raise InputError(path, n, name, "missing or empty")
        problem = check(record) if check else None
        if problem:
            raise InputError(path, n, fields[0], problem)
        rows.append({name: record[name] for name in fields})
    if not rows:
        raise QilinError(f"{path}: no records")
    return Dataset.from_list(rows)


def _history_entry(log: dict) -> dict:
    return {"step": log.get("step"), "epoch": log.get("epoch"), "loss": log["loss"],
            "lr": log.get("learning_rate"), "tokens": log.get("num_input_tokens_seen")}


def run_trainer_stage(cfg, make_trainer, log_metrics=None) -> Path:
    """The `run(cfg)` of a stage that trains `cfg.model` into `cfg.out/model` with one TRL trainer:
    complete folders return at once, a killed run resumes, metrics and manifest as every stage writes
    them. `make_trainer(model, tokenizer, run)` builds the trainer; `log_metrics(log_history)` adds the
    trainer's own last logged numbers (e.g. reward margins) to metrics.json."""
    from qilin.model.load import load_model

    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    if not run.model_is_complete():
        model, tokenizer = load_model(cfg.model)
        trainer = make_trainer(model, tokenizer, run)
        metrics = train(trainer, run)
        metrics.update(log_metrics(trainer.state.log_history) if log_metrics else {})
        run.write_metrics(metrics)
        save_trained(trainer, tokenizer, run.model_dir)
    return run.finish(inputs={"model": cfg.model, "data": cfg.data}, seed=cfg.train.seed,
                      extra={"model": str(run.model_dir)})
