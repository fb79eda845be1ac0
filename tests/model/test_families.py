"""Conformance: the model families users bring run every stage (cpt -> sft -> dpo) at micro size.

Randomly initialised models from transformers' own config classes (Llama, Qwen2, Qwen3, Mistral, Gemma;
hidden 32, 2 layers, grouped-query attention; no downloads), each paired with one of three tokenizers
users bring: one without a pad token, one with its own chat template (and no ChatML tokens), one whose
special tokens were added after the model was built (the embeddings must grow). One optimizer step per
stage: what is tested is that each stage runs and hands the next a model folder whose tokenizer keeps its
pad token and chat template, not that it learns (test_train_stages.py does that).
"""

from __future__ import annotations

import json

import pytest
from micro_data import micro_lines

from qilin.config import build
from qilin.errors import QilinError
from qilin.model.chat import CHAT_TEMPLATE, IM_END, IM_START
from qilin.model.load import load_model, resolve_targets, save_model
from qilin.train import cpt, dpo, sft

FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma"]
TOKENIZERS = {"llama": "no_pad", "qwen2": "own_template", "qwen3": "new_tokens", "mistral": "own_template",
              "gemma": "new_tokens"}
LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# A user's own template (Llama-2 style markers, no ChatML), already marked for assistant-only loss.
OWN_TEMPLATE = ("{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}"
                "{%- generation -%}{{- m['content'] + ' </s>' -}}{%- endgeneration -%}"
                "{%- else -%}{{- '[INST] ' + m['content'] + ' [/INST] ' -}}{%- endif -%}{%- endfor -%}")
STEP = {"batch_size": 2, "max_length": 64, "max_steps": 1, "logging_steps": 1, "save_steps": 1000,
        "warmup_ratio": 0.0, "lr": 1e-3}


def family_config(family: str, vocab: int):
    import transformers

    cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "mistral": "MistralConfig",
           "gemma": "GemmaConfig"}[family]
    return getattr(transformers, cls)(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                      max_position_embeddings=128, pad_token_id=None, bos_token_id=None,
                                      eos_token_id=None)


@pytest.fixture(scope="module")
def plain_backend(tmp_path_factory):
    """A byte-level BPE over the micro corpus with only '</s>': no ChatML tokens, no pad, no template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(micro_lines(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def user_tokenizer(kind: str, backend, micro_tokenizer):
    """(tokenizer, rows the model is built with) for one of the three kinds users bring."""
    import copy

    from transformers import PreTrainedTokenizerFast

    if kind == "no_pad":  # ChatML tokens but no pad token and no template
        tok = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(micro_tokenizer.backend_tokenizer),
                                      eos_token="<|endoftext|>")
        return tok, len(tok)
    tok = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(backend), eos_token="</s>")
    rows = len(tok)
    if kind == "own_template":
        tok.chat_template = OWN_TEMPLATE
    else:  # ChatML tokens added after the model was built: its embeddings must grow
        tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    return tok, rows


@pytest.mark.parametrize("family", FAMILIES)
def test_family_runs_every_stage(family, tmp_path, plain_backend, micro_tokenizer, text_data, sft_data, dpo_data):
    from transformers import AutoModelForCausalLM

    kind = TOKENIZERS[family]
    tok, rows = user_tokenizer(kind, plain_backend, micro_tokenizer)
    assert tok.pad_token is None
    model = AutoModelForCausalLM.from_config(family_config(family, rows))
    assert model.config.model_type == family
    assert set(resolve_targets(model, "all-linear")) == LINEAR  # LoRA finds every family's projections
    start = save_model(model, tok, tmp_path / "start")
    model, tok = load_model(start)
    template, pad = tok.chat_template, tok.pad_token
    assert pad is not None and (template == OWN_TEMPLATE) == (kind == "own_template")
    assert (template == CHAT_TEMPLATE) == (kind != "own_template")
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)

    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0} if family in ("qwen2", "gemma") else {}
    folder = start
    for stage, data in ((cpt, text_data), (sft, sft_data), (dpo, dpo_data)):
        values = {"out": tmp_path / stage.__name__.rsplit(".")[-1], "model": folder, "data": data,
                  "train": {**STEP, "lora": lora}}
        if stage is cpt:
            values["block_size"] = 64
        out = stage.run(build(stage.Config, values, "test"))
        folder = out / "model"
        assert json.loads((out / "metrics.json").read_text())["train.steps"] == 1
        loaded, again = load_model(folder)
        assert loaded.config.model_type == family and not (folder / "adapter_config.json").exists()
        assert again.chat_template == template and again.pad_token == pad  # survived the save (and merge)
        assert loaded.config.pad_token_id == again.pad_token_id
        assert loaded.get_input_embeddings().weight.shape[0] >= len(again)


def test_missing_lora_target_is_named(micro_model_dir):
    model, _ = load_model(micro_model_dir)
    with pytest.raises(QilinError, match=r"W_pack not in .*has down_proj, gate_proj, k_proj"):
        resolve_targets(model, "q_proj,W_pack", micro_model_dir)


def test_remote_code_refused_unless_allowed(tmp_path, micro_model_dir, monkeypatch):
    folder = tmp_path / "baichuan"
    folder.mkdir()
    for f in micro_model_dir.iterdir():
        if f.is_file() and f.name != "config.json":
            (folder / f.name).write_bytes(f.read_bytes())
    config = {"model_type": "baichuan", "auto_map": {"AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM"},
              "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 400}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv("QILIN_TRUST_REMOTE_CODE", raising=False)
    with pytest.raises(QilinError, match="trust-remote-code") as e:
        load_model(folder)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("QILIN_TRUST_REMOTE_CODE", "1")  # allowed: past the check, then no code to run here
    with pytest.raises(QilinError, match="cannot load as a causal language model"):
        load_model(folder)


def test_qlora_on_cpu_is_one_line(micro_model_dir):
    import torch

    from qilin.model.load import LoraSettings

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: QLoRA may load")
    with pytest.raises(QilinError, match="QLoRA .* needs a CUDA GPU"):
        load_model(micro_model_dir, lora=LoraSettings(enabled=True, qlora=True))
