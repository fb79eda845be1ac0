"""The `dpo` stage: direct preference optimisation with the sigmoid loss (METHODS.md 1).

The reference policy is the input model (the merged SFT model). With full fine-tuning TRL 1.16's
DPOTrainer loads a frozen second copy from the input folder (`ref_model=None` ->
`model.config.name_or_path`); with LoRA no copy is made: the reference log-probabilities come
from the same network with the adapter disabled.

`prompt_format` chooses how a pair is rendered: `chat` (THE chat template, as SFT trains) or
`qilin-med`, the Qilin-Med repository's DPO format (williamliujl/Qilin-Med, commit 9b96dc6,
scripts/dpo_training.py `return_prompt_and_responses`): plain text `"Question: " + prompt +
"\n\nAnswer: "`, the answer after it and EOS (TRL appends it to plain-text completions).
`max_chars` drops pairs longer than that in characters, as that script's filter does
(`len(prompt + chosen)` and `len(prompt + rejected)` at most max_source_length + max_target_length).

Speed: on CPU, TRL's fused LM head scores every position of the batch (prompt and padding too);
`_score_completions_only` makes it score only the completion tokens, which DPO uses (docstring
there). The loss and its gradient are the same (tests/train/test_train_dpo.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qilin.config import doc
from qilin.model.load import is_adapter_dir, lora_config
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings, load_jsonl, run_trainer_stage, trl_args

FIELDS = ["prompt", "chosen", "rejected"]
QILIN_MED_PROMPT = "Question: {prompt}\n\nAnswer: "  # Qilin-Med scripts/dpo_training.py (module docstring)


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/), also the reference policy")
    data: Path = doc('JSONL of {"prompt", "chosen", "rejected"} plain strings (prompt = the user turn)')
    beta: float = doc("DPO beta: how far the policy may move from the reference (higher = less)", 0.1)
    loss_type: str = doc("TRL DPO loss: sigmoid (the DPO paper, Qilin-Med), ipo, hinge, ...", "sigmoid")
    prompt_format: Literal["chat", "qilin-med"] = doc(
        'chat: THE chat template, as in SFT; qilin-med: plain "Question: {prompt}\\n\\nAnswer: " then the answer '
        "(the Qilin-Med repository's DPO script)", "chat")
    max_chars: int | None = doc("drop pairs whose prompt + answer (either one) is longer than this many characters "
                                "(Qilin-Med: 1152 = max_source_length 1024 + max_target_length 128); null = keep all",
                                None)
    train: TrainSettings = doc(
        "training hyper-parameters (Qilin-Med: LoRA r 8, alpha 16, LR 5e-4, cosine, 100 warm-up steps)",
        lambda: TrainSettings(lr=5e-5, epochs=1.0, batch_size=4))


def run(cfg: Config) -> Path:
    return run_trainer_stage(
        cfg, lambda model, tokenizer, run: _trainer(model, tokenizer, _pairs(cfg.data, cfg.prompt_format, cfg.max_chars),
                                                     cfg, run),
        _reward_metrics)


def _pairs(path: Path, prompt_format: str = "chat", max_chars: int | None = None):
    """Plain-string pairs -> TRL's conversational form (chat: our chat template renders them as in SFT)
    or plain text (qilin-med)."""
    from qilin.errors import QilinError

    pairs = load_jsonl(path, FIELDS, lambda r: None if all(isinstance(r[k], str) for k in FIELDS)
                       else "prompt, chosen and rejected must be plain strings")
    if max_chars is not None:
        pairs = pairs.filter(lambda r: max(len(r["prompt"] + r["chosen"]), len(r["prompt"] + r["rejected"]))
                             <= max_chars)
        if not len(pairs):
            raise QilinError(f"{path}: no pair within max_chars={max_chars} characters")
    if prompt_format == "qilin-med":
        return pairs.map(lambda r: {"prompt": QILIN_MED_PROMPT.format(prompt=r["prompt"])})
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
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=pairs, processing_class=tokenizer,
                         peft_config=lora_config(settings.lora) if settings.lora.enabled else None)
    _score_completions_only(trainer)
    return trainer


def _score_completions_only(trainer) -> None:
    """On CPU, make TRL's fused LM head score only the positions with a label, for this trainer's loss.

    DPO needs the log-probabilities of the completion tokens only. TRL 1.16's fused head projects
    just those positions through the LM head when Triton runs (CUDA, XPU); elsewhere it projects
    every position (prompt and padding too), because on compiled backends such as Neuron a varying
    number of positions would recompile the kernel at every batch. Eager CPU has no such cost, and
    the LM head is the largest matrix of a small model. The positions skipped are the ones whose
    results TRL zeroes anyway, so the loss, gradients and logged metrics are unchanged
    (tests/train/test_train_dpo.py). TRL decides by its module's `_use_triton`; it is switched only
    while this trainer computes a loss (policy and reference forward), then restored.
    """
    import types

    import torch
    import trl.trainer.utils as trl_utils

    if torch.cuda.is_available():
        return
    compute_loss = trainer.compute_loss

    def scoped(self, *args, **kwargs):
        saved = trl_utils._use_triton
        trl_utils._use_triton = lambda device: device.type == "cpu" or saved(device)
        try:
            return compute_loss(*args, **kwargs)
        finally:
            trl_utils._use_triton = saved

    trainer.compute_loss = types.MethodType(scoped, trainer)


def _reward_metrics(log_history: list[dict]) -> dict:
    """The last logged implicit-reward accuracy and margin (chosen minus rejected), for the summary."""
    last = next((h for h in reversed(log_history) if "rewards/margins" in h), {})
    return {"train.reward_accuracy": last.get("rewards/accuracies"),
            "train.reward_margin": last.get("rewards/margins")}
