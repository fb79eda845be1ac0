import pytest
import torch

from qilin.errors import QilinError
from qilin.model.load import LoraSettings, apply_lora, load_model, merge_lora, save_model
from qilin.model.tiny import TinyConfig, make_tiny_model
from qilin.runs import MODEL_DONE


def test_tiny_defaults_and_forward(micro_tokenizer, micro_config):
    assert (TinyConfig().hidden, TinyConfig().layers, TinyConfig().ffn) == (256, 4, 704)
    model = make_tiny_model(micro_tokenizer, micro_config, seed=3)
    assert model.dtype == torch.float32 and model.config.tie_word_embeddings
    batch = micro_tokenizer(["高血压的常见症状", "答案：A"], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(micro_tokenizer))
    same = make_tiny_model(micro_tokenizer, micro_config, seed=3)
    assert torch.equal(model.model.embed_tokens.weight, same.model.embed_tokens.weight)


def test_load_errors(tmp_path, micro_model_dir):
    with pytest.raises(QilinError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(QilinError, match="config.json"):
        load_model(tmp_path)
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((micro_model_dir / "config.json").read_text())
    with pytest.raises(QilinError, match="tokenizer"):
        load_model(no_tok)


def test_save_and_load_round_trip(tmp_path, micro_model_dir):
    model, tok = load_model(micro_model_dir)
    assert (micro_model_dir / MODEL_DONE).is_file()
    out = save_model(model, tok, tmp_path / "copy")
    assert (out / MODEL_DONE).is_file() and not (tmp_path / ".copy.tmp").exists()
    again, _ = load_model(out)
    ids = tok("肺炎的症状", return_tensors="pt").input_ids
    assert torch.allclose(model(ids).logits, again(ids).logits)


def test_lora_merge_matches_peft_model(micro_model_dir):
    model, tok = load_model(micro_model_dir)
    peft_model = apply_lora(model, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0): give it weights to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.eval()
    ids = tok("糖尿病患者应当低盐饮食", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = peft_model(ids).logits
        merged = merge_lora(peft_model)
        assert type(merged).__name__ == "Qwen2ForCausalLM"
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
