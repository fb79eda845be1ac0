"""DPO: scoring only the completion tokens on CPU changes nothing but the time; the Qilin-Med prompt format."""

import pytest
import torch

from qilin.config import build
from qilin.model.load import load_model
from qilin.runs import RunFolder
from qilin.train import dpo


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return float(loss), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def test_completion_only_scoring_gives_the_same_loss_and_gradients(tmp_path, micro_model_dir, dpo_data):
    import trl.trainer.utils as trl_utils
    from trl import DPOTrainer

    model, tok = load_model(micro_model_dir)
    cfg = build(dpo.Config, {"out": tmp_path / "dpo", "model": micro_model_dir, "data": dpo_data,
                             "train": {"batch_size": 4, "max_length": 64, "max_steps": 2, "lr": 1e-2}})
    trainer = dpo._trainer(model, tok, dpo._pairs(dpo_data), cfg, RunFolder(tmp_path / "dpo"))
    original = trl_utils._use_triton
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["completion_mask"] == 0).any()  # prompt and padding positions exist and are skipped
    trainer.model.train()
    with torch.no_grad():  # move the policy away from the reference, so the loss is not log(2) everywhere
        for p in trainer.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    seen = []
    spy = trl_utils._ChunkedLogProbFunction.apply
    trl_utils._ChunkedLogProbFunction.apply = lambda h, *a: seen.append(h.shape[0]) or spy(h, *a)
    try:
        ours = _loss_and_grads(trainer, batch)  # the stage's trainer
        scored_ours = set(seen)
        seen.clear()
        trainer.compute_loss = DPOTrainer.compute_loss.__get__(trainer)  # TRL's own
        theirs = _loss_and_grads(trainer, batch)
    finally:
        trl_utils._ChunkedLogProbFunction.apply = spy
    assert trl_utils._use_triton is original  # switched only while our loss runs
    completion = int((batch["completion_mask"][:, 1:] == 1).sum())
    # ours scored the completion tokens only (policy and reference), TRL's own every position
    assert scored_ours == {completion} and set(seen) == {batch["input_ids"][:, 1:].numel()}
    assert ours[0] == pytest.approx(theirs[0], abs=1e-6) and ours[0] != pytest.approx(0.6931, abs=1e-4)
    assert max(float((a - b).abs().max()) for a, b in zip(ours[1], theirs[1])) < 1e-5


def test_qilin_med_prompt_format_and_character_filter(dpo_data):
    pairs = dpo._pairs(dpo_data, "qilin-med", max_chars=None)
    first = pairs[0]
    assert first["prompt"].startswith("Question: ") and first["prompt"].endswith("\n\nAnswer: ")
    assert isinstance(first["chosen"], str)  # plain text: TRL appends EOS, no chat template
    short = dpo._pairs(dpo_data, "chat", max_chars=22)
    assert 0 < len(short) < len(pairs)
    assert all(max(len(p[0]["content"] + c[0]["content"]), len(p[0]["content"] + r[0]["content"])) <= 22
               for p, c, r in zip(short["prompt"], short["chosen"], short["rejected"]))  # 3-character diseases dropped
