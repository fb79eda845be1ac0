"""`qilin plan`: exact parameter counts from config.json, the ZeRO arithmetic, verdicts, and `qilin run`'s check."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.cli import main
from qilin.errors import QilinError
from qilin.plan import memory
from qilin.plan.memory import GB, Device, Work
from qilin.plan.shape import read_config, shape_of

ROOT = Path(__file__).resolve().parents[2]
BAICHUAN = Path(__file__).parent / "fixtures" / "baichuan-7b"
RECIPE_7B = ROOT / "recipes" / "qilin-med-7b.yaml"


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral", "gemma"])
@pytest.mark.parametrize("tied", [True, False])
def test_meta_count_equals_the_built_model(family, tied):
    import transformers
    from transformers import AutoModelForCausalLM

    cls = getattr(transformers, {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
                                 "mistral": "MistralConfig", "gemma": "GemmaConfig"}[family])
    config = cls(vocab_size=500, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_config(config)
    shape = shape_of(config.to_dict())
    assert shape.params == sum(p.numel() for p in model.parameters()) and shape.exact
    assert shape.output == (0 if tied else 500 * 64)
    # LoRA r 4 on every linear layer: PEFT's own count of trainable parameters
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert shape.lora_params(4, "all-linear") == peft.get_nb_trainable_parameters()[0]


def test_remote_code_config_counted_by_formula():
    """Baichuan-7B (model_type baichuan, auto_map) has the Llama-7B layout with a 64,000 vocabulary: the
    formula must give exactly what transformers counts for the same dimensions as a llama config."""
    config = read_config(BAICHUAN)
    formula = shape_of(config)
    exact = shape_of({k: v for k, v in config.items() if k != "auto_map"} | {"model_type": "llama"})
    assert not formula.exact and exact.exact
    assert formula.params == exact.params == 7_000_559_616


def test_zero_matches_the_paper():
    """ZeRO paper (Rajbhandari et al. 2020), Figure 1: 7.5B parameters on 64 GPUs, K = 12: P_os+g 16.6 GB,
    P_os+g+p 1.9 GB per device (weights, gradients, optimizer state; activations apart)."""
    from qilin.plan.shape import Shape

    shape = Shape("x", 7_500_000_000, 0, 0, 1, 1, 1, 1, 1, 1)
    work = Work("cpt", 1, 1)
    zero2 = memory.estimate(shape, work, Device(gpus=64, mem_gb=80, sharding="zero2"))
    zero3 = memory.estimate(shape, work, Device(gpus=64, mem_gb=80, sharding="zero3"))
    state = lambda parts: sum(v for k, v in parts.items() if k not in ("activations", "gathered layers")) / GB
    assert round(state(zero2), 1) == 16.6
    assert round(state(zero3), 1) == 1.9


def test_choices_that_should_shrink_memory_do():
    shape = shape_of(read_config(BAICHUAN))
    gpu = Device(gpus=8, mem_gb=80, sharding="zero2")
    base = Work("cpt", 4, 1024)
    total = lambda w, d=gpu: sum(memory.estimate(shape, w, d).values())
    assert total(Work("cpt", 4, 1024, checkpointing=True)) < total(base)
    assert total(Work("cpt", 2, 1024)) < total(base)
    assert total(base, Device(gpus=8, mem_gb=80, sharding="zero3")) < total(base)
    assert total(Work("cpt", 4, 1024, method="qlora")) < total(Work("cpt", 4, 1024, method="lora")) < total(base)
    dpo_full, dpo_lora = Work("dpo", 2, 1024), Work("dpo", 2, 1024, method="lora")
    assert "reference model" in memory.estimate(shape, dpo_full, gpu)
    assert "reference model" not in memory.estimate(shape, dpo_lora, gpu)


def test_seven_b_recipe_on_one_24gb_gpu_and_on_eight_80gb(capsys, tmp_path):
    import yaml

    assert main(["plan", str(RECIPE_7B), f"base.model={BAICHUAN}", "--gpus", "1", "--gpu-mem", "24"]) == 0
    out = capsys.readouterr().out
    cpt = out.split("\ncpt:")[1].split("\n\n")[0]
    assert "DOES NOT FIT" in cpt and "would fit with:" in cpt  # the official LoRA CPT at 32 x 1024 per device
    # the paper's full-parameter CPT (METHODS.md 1) on one 24 GB GPU: does not fit, and LoRA would
    recipe = yaml.safe_load(RECIPE_7B.read_text(encoding="utf-8"))
    recipe["stages"][0]["train"]["lora"]["enabled"] = False
    full = tmp_path / "full-cpt.yaml"
    full.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    assert main(["plan", str(full), f"base.model={BAICHUAN}", "--gpus", "1", "--gpu-mem", "24"]) == 0
    cpt = capsys.readouterr().out.split("\ncpt:")[1].split("\n\n")[0]
    assert cpt.startswith(" full") and "DOES NOT FIT" in cpt and "train.lora.enabled=true" in cpt
    assert main(["plan", str(RECIPE_7B), "--model-config", str(BAICHUAN / "config.json"), "--gpus", "8",
                 "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert out.count("   fits (") == 3 and "DOES NOT FIT" not in out
    assert "deepspeed-zero2.yaml" in out and "7.00B parameters (Llama formula" in out


def test_bad_plan_arguments_are_one_line(capsys):
    assert main(["plan", str(RECIPE_7B), "--gpus", "2"]) == 2
    assert "--gpu-mem" in capsys.readouterr().err
    assert main(["plan", str(RECIPE_7B), "--gpus", "1", "--gpu-mem", "24"]) == 2  # /models/base-7b is absent
    assert "config.json" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(gpus=st.integers(-2, 16), mem=st.one_of(st.none(), st.floats(-10, 200, allow_nan=False)),
       sharding=st.sampled_from([None, *memory.SHARDINGS]), util=st.floats(-1, 2, allow_nan=False))
def test_device_arguments_give_a_device_or_a_one_line_error(gpus, mem, sharding, util):
    import argparse

    from qilin.plan.cli import _device

    args = argparse.Namespace(gpus=gpus, gpu_mem=mem, sharding=sharding, peak_tflops=989.0, utilisation=util)
    try:
        device = _device(args)
    except QilinError as e:
        assert "\n" not in str(e)
        return
    assert device.usable_gb > 0 and device.gpus >= 1 and 0 < device.utilisation <= 1


def test_run_stops_before_a_stage_that_cannot_fit(tmp_path, monkeypatch):
    from micro_data import micro_recipe

    from qilin.plan import fit
    from qilin.recipe import run_recipe

    recipe = micro_recipe(tmp_path / "run")
    plans = fit.check_fits(recipe, Device(mem_gb=64, cpu=True))
    assert [p.name for p in plans] == ["base", "cpt", "sft", "dpo", "rag-sft"] and all(p.fits for p in plans)
    monkeypatch.setattr(fit, "detect_device", lambda: Device(mem_gb=0.001, cpu=True))
    with pytest.raises(QilinError, match=r"^base: needs .* GB per device.*--force"):
        run_recipe(recipe)
    assert not (tmp_path / "run" / "00-data").exists()  # stopped before anything ran
    assert fit.check_fits(recipe, force=True) == []


@pytest.mark.parametrize("lora_dropout", [None, 0.0, 0.1])
def test_layer_activations_match_what_autograd_saves(lora_dropout):
    """The per-layer count (8h + 3kv + 4f, plus LoRA's dropped-out inputs) against the bytes autograd keeps
    for the backward pass of a small Qwen2 (saved-tensors hook, each storage once, parameters excluded)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=300, hidden_size=128, intermediate_size=352, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    method = "full"
    if lora_dropout is not None:
        from peft import LoraConfig, get_peft_model

        model, method = get_peft_model(model, LoraConfig(r=4, lora_dropout=lora_dropout, target_modules="all-linear")), \
            "lora"
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 300, (4, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    shape = shape_of(config.to_dict())
    work = Work("cpt", 4, 64, method, 4, "all-linear", lora_dropout or 0.0)
    head = memory.HEAD_DEFAULT[True] * 4 * 64 * 300 * 4
    planned = memory.activation_bytes(shape, work, Device(mem_gb=8, cpu=True)) - head
    logits = 4 * 64 * 300 * 4  # the one (tokens x vocab) buffer autograd itself keeps: the log-probabilities
    assert planned == pytest.approx(sum(saved.values()) - logits, rel=0.2)
