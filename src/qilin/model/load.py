"""Load any local Hugging Face causal-LM folder, wrap it with LoRA, merge, save atomically."""

from __future__ import annotations

import json
import os
import shutil
import struct
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


def check_model_dir(path: str | Path, what: str = "model folder") -> None:
    """A QilinError unless `path` looks like a Hugging Face model folder with a tokenizer and whole
    safetensors weights: checked here, in a second, so that a user's mistake is one line naming the
    folder rather than a traceback from deep inside transformers (or a bundled file it reads next)."""
    path = Path(path)
    if not path.exists():
        raise QilinError(f"{path}: {what} not found")
    if not path.is_dir():
        raise QilinError(f"{path}: {what} expected, but this is a file")
    if not (path / "config.json").is_file():
        hint = " (it holds a LoRA adapter: merge it into its base model first)" if (
            path / "adapter_config.json").is_file() else ""
        raise QilinError(f"{path}: no config.json, not a Hugging Face model folder{hint}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise QilinError(f"{path / 'config.json'}: not readable JSON ({str(e)[:80]})") from None
    if not isinstance(config, dict):
        raise QilinError(f"{path / 'config.json'}: expected a JSON object, got {type(config).__name__}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise QilinError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    _check_weights(path)


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "model.ckpt")


def _check_weights(path: Path) -> None:
    """Every *.safetensors file whole (its header's tensors end at the file's end); pickle-only refused."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pickles = [n for n in PICKLE_WEIGHTS if (path / n).is_file()]
        if pickles:  # unpickling runs arbitrary code: transformers refuses it too, with a traceback
            raise QilinError(f"{path}: holds only a pickle checkpoint ({pickles[0]}); qilin loads safetensors "
                             "only (convert it: model.save_pretrained(dir, safe_serialization=True))")
        raise QilinError(f"{path}: no model weights (*.safetensors)")
    for f in files:
        problem = _safetensors_problem(f)
        if problem:
            raise QilinError(f"{f}: {problem}; the file is damaged or was not copied whole")


def _safetensors_problem(f: Path) -> str | None:
    """Why a safetensors file cannot be whole (8-byte header size, JSON header, data offsets), or None."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes)"
        n = struct.unpack("<Q", head)[0]
        if n > size - 8:
            return f"truncated (its header alone needs {n + 8} bytes, the file has {size})"
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError):
            return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    if ends and 8 + n + max(ends) > size:
        return f"truncated ({size} bytes, its tensors need {8 + n + max(ends)})"
    return None


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
