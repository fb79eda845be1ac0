"""A tiny random Qwen2 model with a tiny byte-level BPE tokenizer, built once per test session.

Built here rather than with qilin.model.tiny so that the eval tests pin only what they rely on
(ChatML special tokens, single-token A-E); loading through qilin.model.load adds the chat template.
"""

from __future__ import annotations

import pytest

LINES = [
    "高血压患者应当低盐饮食，并定期测量血压。",
    "糖尿病的典型症状是多饮、多尿、多食和体重下降。",
    "感冒通常由病毒引起，多休息，多喝水。",
    "答案：A B C D E 选项 患者 医生 治疗 药物",
    "阿司匹林可以用于预防心血管疾病。",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(LINES * 3, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=specials[1:])
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.2,
                      eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from qilin.model.runtime import load_lm

    return load_lm(tiny_model_dir)

