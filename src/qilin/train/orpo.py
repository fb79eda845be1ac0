"""The `orpo` stage: odds-ratio preference optimisation (Hong et al. 2024) through TRL's ORPOTrainer.

One loss on the preference pairs: the SFT loss (negative log-likelihood) of the chosen answer plus
`beta` times the odds-ratio term `-log sigmoid(log odds(chosen) - log odds(rejected))`. There is no
reference model, so nothing is loaded twice. In TRL 1.x the trainer lives in `trl.experimental.orpo`
(moved out of the stable API); its import is inside `_trainer` so the stage loads without it.

Same data as `dpo` (the pairs are rendered with our chat template the same way), same run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.model.load import lora_config
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings, run_trainer_stage, trl_args
from qilin.train.dpo import _pairs as chat_pairs


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/)")
    data: Path = doc('JSONL of {"prompt", "chosen", "rejected"} plain strings (prompt = the user turn)')
    beta: float = doc("weight of the odds-ratio term against the SFT loss (the paper's lambda; TRL default 0.1)", 0.1)
    train: TrainSettings = doc("training hyper-parameters (the ORPO paper: LR 8e-6 for 7B models)",
                               lambda: TrainSettings(lr=5e-5, epochs=1.0, batch_size=4))


def run(cfg: Config) -> Path:
    def make(model, tokenizer, run: RunFolder):
        return _trainer(model, tokenizer, chat_pairs(cfg.data), cfg, run)

    return run_trainer_stage(cfg, make, _odds_metrics)


def _trainer(model, tokenizer, pairs, cfg: Config, run: RunFolder):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the move is documented above
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    settings = cfg.train
    args = trl_args(ORPOConfig, settings, run.checkpoints, beta=cfg.beta)
    return ORPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer,
                       peft_config=lora_config(settings.lora) if settings.lora.enabled else None)


def _odds_metrics(log_history: list[dict]) -> dict:
    """The last logged log-odds ratio and reward margin (chosen minus rejected), for the summary."""
    last = next((h for h in reversed(log_history) if "rewards/margins" in h), {})
    return {"train.log_odds_ratio": last.get("log_odds_ratio"), "train.reward_margin": last.get("rewards/margins")}
