"""The embedded default model: a tiny Qwen2 trained from scratch on CPU.

h256 / 4 layers / vocab 8k is 5.3M parameters and trains at about 2,100 tokens/s on 2 CPU cores
(STACK.md); it is the CPU-sized twin of a real base model, not a useful doctor.
"""

from __future__ import annotations

from dataclasses import dataclass

from qilin.config import doc
from qilin.model.chat import stop_token_ids


@dataclass
class TinyConfig:
    hidden: int = doc("hidden size (width of the residual stream)", 256)
    layers: int = doc("number of transformer layers", 4)
    heads: int = doc("attention heads; hidden must be divisible by it", 4)
    kv_heads: int = doc("key/value heads (grouped-query attention when below heads)", 4)
    ffn: int = doc("width of the SwiGLU feed-forward layer", 704)
    max_position: int = doc("longest sequence the model is built for, in tokens", 1024)
    tied: bool = doc("share the input embedding and the output layer (most of a tiny model's weights)", True)


def make_tiny_model(tokenizer, cfg: TinyConfig | None = None, seed: int = 0):
    """A freshly initialised fp32 Qwen2ForCausalLM sized for `tokenizer`; same seed -> same weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or TinyConfig()
    stops = stop_token_ids(tokenizer)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        intermediate_size=cfg.ffn,
        max_position_embeddings=cfg.max_position,
        tie_word_embeddings=cfg.tied,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # generate() stops at the end of a chat turn as well as at the end of a document.
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
