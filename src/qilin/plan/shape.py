"""A model's shape from its config.json alone: parameter counts, widths, the linear layers LoRA adapts.

Counting builds the model on the `meta` device with accelerate's `init_empty_weights` (no memory, no
weights read), so the count is exact for every family transformers knows. A model whose code is not
in transformers (Baichuan, InternLM 1, ...) is counted with the Llama formula from its config fields
instead, and says so (`exact=False`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qilin.errors import QilinError


@dataclass
class Shape:
    model_type: str
    params: int            # every parameter, a tied embedding counted once
    embedding: int         # input embedding (and the output layer when tied)
    output: int            # an untied output layer (lm_head), else 0
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    linear: dict[str, tuple[int, int]] = field(default_factory=dict)  # decoder linear name -> (in, out), per layer
    exact: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def linear_params(self) -> int:
        """Weights of the decoder's linear layers (what QLoRA stores in 4 bits)."""
        return self.layers * sum(i * o for i, o in self.linear.values())

    def lora_params(self, r: int, targets: str) -> int:
        """Trainable LoRA parameters: r x (in + out) per adapted linear layer (A is r x in, B is out x r)."""
        chosen = lora_targets(self.linear, targets)
        return self.layers * sum(r * (self.linear[n][0] + self.linear[n][1]) for n in chosen)


def lora_targets(linear: dict[str, tuple[int, int]], targets: str) -> list[str]:
    """The decoder linear layers a LoRA `target_modules` setting adapts ('all-linear' = every one; PEFT
    excludes the output layer too)."""
    if targets == "all-linear":
        return list(linear)
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    return [n for n in linear if n.rsplit(".", 1)[-1] in wanted]


def read_config(path: str | Path) -> dict:
    """config.json of a model folder (or the file itself) as a dict; a one-line error if absent or broken."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise QilinError(f"{path}: no config.json to read the model's size from (a model folder, or "
                         "--model-config with a config.json)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise QilinError(f"{file}:{e.lineno}: not valid JSON ({e.msg})") from None


def shape_of(config: dict) -> Shape:
    """The Shape of a model described by a config.json dict: exact for families transformers knows."""
    from transformers import CONFIG_MAPPING

    text = config.get("text_config") or config  # multimodal configs keep the language model inside
    model_type = config.get("model_type", "?")
    if model_type in CONFIG_MAPPING and not config.get("auto_map"):
        return _counted(config)
    return _formula(text, model_type)


def tiny_shape(tiny, vocab_size: int) -> Shape:
    """The Shape of qilin's embedded default (model/tiny.py) before its tokenizer exists."""
    return shape_of({"model_type": "qwen2", "vocab_size": vocab_size, "hidden_size": tiny.hidden,
                     "num_hidden_layers": tiny.layers, "num_attention_heads": tiny.heads,
                     "num_key_value_heads": tiny.kv_heads, "intermediate_size": tiny.ffn,
                     "max_position_embeddings": tiny.max_position, "tie_word_embeddings": tiny.tied})


def _counted(config: dict) -> Shape:
    """Build the model on the meta device and count what it holds."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")}
    cfg = AutoConfig.for_model(config["model_type"], **values)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    embedding = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    output = 0 if out is None or out.weight is model.get_input_embeddings().weight else out.weight.numel()
    if output and cfg.get_text_config().tie_word_embeddings:  # on the meta device the tie is not made
        params, output = params - output, 0
    linear: dict[str, tuple[int, int]] = {}
    layer0 = _first_layer(model)
    for name, module in layer0.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear[name] = (module.in_features, module.out_features)
    text = cfg.get_text_config()
    return Shape(config["model_type"], params, embedding, output, text.num_hidden_layers, text.hidden_size,
                 getattr(text, "intermediate_size", 4 * text.hidden_size), text.num_attention_heads,
                 getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
                 text.vocab_size, linear, exact=True)


def _first_layer(model):
    """The first decoder layer (model.model.layers[0] in every Llama-like family)."""
    for name, module in model.named_modules():
        if name.endswith(("layers.0", "h.0")):
            return module
    raise QilinError(f"{type(model).__name__}: no decoder layers found to plan LoRA on")


def _formula(config: dict, model_type: str) -> Shape:
    """The Llama layout (attention q/k/v/o, SwiGLU gate/up/down, two norms per layer) from config fields."""
    try:
        h, n_layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        heads = config["num_attention_heads"]
    except KeyError as e:
        raise QilinError(f"config.json (model_type {model_type!r}): no {e.args[0]}: cannot plan its memory") from None
    kv = config.get("num_key_value_heads") or heads
    ffn = config.get("intermediate_size") or 4 * h
    d = h // heads
    linear = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv * d), "self_attn.v_proj": (h, kv * d),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, ffn), "mlp.up_proj": (h, ffn),
              "mlp.down_proj": (ffn, h)}
    tied = bool(config.get("tie_word_embeddings", False))
    per_layer = sum(i * o for i, o in linear.values()) + 2 * h
    params = n_layers * per_layer + vocab * h * (1 if tied else 2) + h
    return Shape(model_type, params, vocab * h, 0 if tied else vocab * h, n_layers, h, ffn, heads, kv, vocab,
                 linear, exact=False)
