"""Load any local Hugging Face causal-LM folder, wrap it with LoRA, merge, save atomically."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from qilin.config import doc
from qilin.errors import QilinError
from qilin.model.chat import ensure_chat_template
from qilin.runs import MODEL_DONE, atomic_write_text

# Any one of these means the folder carries a tokenizer (fast, or sentencepiece / BPE vocab files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class LoraSettings:
    enabled: bool = doc("train a LoRA adapter instead of all weights; it is merged into the saved model", False)
    r: int = doc("LoRA rank", 8)
    alpha: int = doc("LoRA scaling numerator (the update is scaled by alpha / r)", 32)
    dropout: float = doc("dropout on the LoRA input", 0.05)
    target_modules: str = doc("layers to adapt: 'all-linear' or comma-separated module names (q_proj,v_proj)",
                              "all-linear")


def load_model(path: str | Path, *, dtype="float32"):
    """(model, tokenizer) from a local folder; the tokenizer gets our chat template where it can (chat.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    check_model_dir(path)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise QilinError(f"{path}: cannot load as a causal language model ({str(e).splitlines()[0]})") from None
    ensure_chat_template(tokenizer)
    return model, tokenizer


def check_model_dir(path: str | Path) -> None:
    """A QilinError unless `path` looks like a Hugging Face model folder with a tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise QilinError(f"{path}: model folder not found")
    if not (path / "config.json").is_file():
        hint = " (it holds a LoRA adapter: merge it into its base model first)" if (
            path / "adapter_config.json").is_file() else ""
        raise QilinError(f"{path}: no config.json, not a Hugging Face model folder{hint}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise QilinError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def lora_config(settings: LoraSettings):
    """The PEFT LoraConfig for `settings` (what the TRL trainers take as `peft_config`)."""
    from peft import LoraConfig

    targets = settings.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, target_modules=targets)


def apply_lora(model, settings: LoraSettings):
    """Wrap `model` with a fresh LoRA adapter (only the adapter trains)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(settings))


def merge_lora(model):
    """Fold a LoRA adapter into the base weights -> a plain transformers model; other models unchanged."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model + tokenizer (a LoRA adapter merged first) to `out_dir`, whole or not at all; mark it complete.

    The files go to a temporary sibling folder first, which is renamed into place; a kill mid-save
    leaves only the temporary folder, which the next save replaces.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_lora(model).save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out_dir.exists():  # an earlier, unmarked (incomplete) save
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    atomic_write_text(out_dir / MODEL_DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return out_dir
