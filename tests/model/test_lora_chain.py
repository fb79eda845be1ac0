"""LoRA across stages: merged folders (default) or adapters on the merged previous stage; DPO's reference is
the previous stage's model in both; pad token and chat template survive every save."""

from __future__ import annotations

import json

import pytest
import torch

from qilin.config import build
from qilin.model.load import is_adapter_dir, load_model
from qilin.runs import RunFolder
from qilin.train import dpo, sft

STEP = {"batch_size": 4, "max_length": 64, "max_steps": 2, "logging_steps": 1, "save_steps": 1000,
        "warmup_ratio": 0.0, "lr": 1e-2}
LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}


def logits(model, tok, text="高血压患者应当低盐饮食"):
    model.eval()
    with torch.no_grad():
        return model(tok(text, return_tensors="pt").input_ids).logits


def run_sft(tmp_path, micro_model_dir, sft_data, save):
    cfg = build(sft.Config, {"out": tmp_path / f"sft-{save}", "model": micro_model_dir, "data": sft_data,
                             "train": {**STEP, "lora": {**LORA, "save": save}}})
    return sft.run(cfg) / "model"


@pytest.mark.parametrize("save", ["merged", "adapter"])
@pytest.mark.parametrize("dpo_lora", [True, False])
def test_dpo_reference_is_the_sft_model(tmp_path, micro_model_dir, sft_data, dpo_data, save, dpo_lora):
    sft_dir = run_sft(tmp_path, micro_model_dir, sft_data, save)
    assert is_adapter_dir(sft_dir) == (save == "adapter")
    sft_model, tok = load_model(sft_dir)
    base, _ = load_model(micro_model_dir)
    expected = logits(sft_model, tok)
    assert not torch.allclose(expected, logits(base, tok), atol=1e-4)  # SFT moved the model

    cfg = build(dpo.Config, {"out": tmp_path / "dpo", "model": sft_dir, "data": dpo_data,
                             "train": {**STEP, "lora": LORA if dpo_lora else {}}})
    policy, tok = load_model(sft_dir, lora=cfg.train.lora)
    trainer = dpo._trainer(policy, tok, dpo._pairs(dpo_data), cfg, RunFolder(tmp_path / "dpo"))
    if dpo_lora:  # the reference is the policy with its (new) adapter off: the SFT model, not the base
        assert trainer.ref_model is None
        with trainer.model.disable_adapter():
            reference = logits(trainer.model, tok)
    else:
        reference = logits(trainer.ref_model, tok)
    assert torch.allclose(reference, expected, atol=1e-5)


def test_adapter_chain_saves_adapters_on_their_inputs(tmp_path, micro_model_dir, sft_data, dpo_data):
    sft_dir = run_sft(tmp_path, micro_model_dir, sft_data, "adapter")
    cfg = build(dpo.Config, {"out": tmp_path / "dpo", "model": sft_dir, "data": dpo_data,
                             "train": {**STEP, "lora": {**LORA, "save": "adapter"}}})
    dpo_dir = dpo.run(cfg) / "model"
    config = json.loads((dpo_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(sft_dir.resolve())  # stacked on the SFT adapter's folder
    sft_model, tok0 = load_model(sft_dir)
    dpo_model, tok = load_model(dpo_dir)  # base + SFT adapter + DPO adapter, merged
    assert not torch.allclose(logits(dpo_model, tok), logits(sft_model, tok0), atol=1e-6)
    _, tok_base = load_model(micro_model_dir)
    for t in (tok0, tok):
        assert t.chat_template == tok_base.chat_template and t.pad_token == tok_base.pad_token
    assert dpo_model.config.pad_token_id == tok_base.pad_token_id


def test_adapter_without_its_base_is_one_line(tmp_path, micro_model_dir, sft_data):
    import shutil

    from qilin.errors import QilinError

    base = tmp_path / "base"
    shutil.copytree(micro_model_dir, base)
    sft_dir = run_sft(tmp_path, base, sft_data, "adapter")
    shutil.rmtree(base)
    with pytest.raises(QilinError, match="base model folder .* is missing"):
        load_model(sft_dir)
