"""The `dpo` stage: direct preference optimisation with the sigmoid loss (METHODS.md 1).

The reference policy is the input model (the merged SFT model). With full fine-tuning TRL 1.16's
DPOTrainer loads a frozen second copy from the input folder (`ref_model=None` ->
`model.config.name_or_path`); with LoRA no copy is made: the reference log-probabilities come
from the same network with the adapter disabled.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.model.load import is_adapter_dir, load_model, lora_config
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings, load_jsonl, save_trained, train, trl_args

FIELDS = ["prompt", "chosen", "rejected"]


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/), also the reference policy")
    data: Path = doc('JSONL of {"prompt", "chosen", "rejected"} plain strings (prompt = the user turn)')
    beta: float = doc("DPO beta: how far the policy may move from the reference (higher = less)", 0.1)
    loss_type: str = doc("TRL DPO loss: sigmoid (the DPO paper, Qilin-Med), ipo, hinge, ...", "sigmoid")
    train: TrainSettings = doc(
        "training hyper-parameters (Qilin-Med: LoRA r 8, alpha 16, LR 5e-4, cosine, 100 warm-up steps)",
        lambda: TrainSettings(lr=5e-5, epochs=1.0, batch_size=4))


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    if not run.model_is_complete():
        model, tokenizer = load_model(cfg.model, lora=cfg.train.lora)
        trainer = _trainer(model, tokenizer, _pairs(cfg.data), cfg, run)
        metrics = train(trainer, run)
        metrics.update(_reward_metrics(trainer.state.log_history))
        run.write_metrics(metrics)
        save_trained(trainer, tokenizer, run.model_dir, cfg.train.lora)
    return run.finish(inputs={"model": cfg.model, "data": cfg.data}, seed=cfg.train.seed,
                      extra={"model": str(run.model_dir)})


def _pairs(path: Path):
    """Plain-string pairs -> TRL's conversational form, so our chat template renders them as in SFT."""
    pairs = load_jsonl(path, FIELDS, lambda r: None if all(isinstance(r[k], str) for k in FIELDS)
                       else "prompt, chosen and rejected must be plain strings")
    return pairs.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                "rejected": [{"role": "assistant", "content": r["rejected"]}]})


def _trainer(model, tokenizer, pairs, cfg: Config, run: RunFolder):
    from trl import DPOConfig, DPOTrainer

    settings = cfg.train
    args = trl_args(DPOConfig, settings, run.checkpoints, beta=cfg.beta, loss_type=[cfg.loss_type])
    # ref_model=None: TRL reloads the reference from model.config.name_or_path; for a model merged from an
    # adapter folder (lora.save: adapter) that is the adapter folder, not a model folder: copy the merged model.
    ref = copy.deepcopy(model) if is_adapter_dir(cfg.model) and not settings.lora.enabled else None
    return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=pairs, processing_class=tokenizer,
                      peft_config=lora_config(settings.lora) if settings.lora.enabled else None)


def _reward_metrics(log_history: list[dict]) -> dict:
    """The last logged implicit-reward accuracy and margin (chosen minus rejected), for the summary."""
    last = next((h for h in reversed(log_history) if "rewards/margins" in h), {})
    return {"train.reward_accuracy": last.get("rewards/accuracies"),
            "train.reward_margin": last.get("rewards/margins")}
