"""Load any local Hugging Face causal-LM folder, wrap it with LoRA (or QLoRA), merge, save atomically.

LoRA across stages: by default (`lora.save: merged`) a stage folds its adapter into a full model folder,
which the next stage loads like any model. With `lora.save: adapter` it saves the adapter alone, its
base the stage's input folder; loading such a folder loads that base (itself possibly an adapter
folder, recursively), merges the adapter, and the next stage trains a new adapter on the merged model.
Either way a stage's input is the full previous model, so DPO's reference (the input model) is right.

A model whose code is not in transformers (`auto_map` in config.json, or a model_type transformers does
not know) would run Python from the model folder: refused unless the user allows it (`qilin
--trust-remote-code`, or QILIN_TRUST_REMOTE_CODE=1).
"""

from __future__ import annotations

import json
import logging
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

log = logging.getLogger(__name__)
REMOTE_CODE_ENV = "QILIN_TRUST_REMOTE_CODE"
# Any one of these means the folder carries a tokenizer (fast, or sentencepiece / BPE vocab files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class LoraSettings:
    enabled: bool = doc("train a LoRA adapter instead of all weights; it is merged into the saved model", False)
    r: int = doc("LoRA rank", 8)
    alpha: int = doc("LoRA scaling numerator (the update is scaled by alpha / r)", 32)
    dropout: float = doc("dropout on the LoRA input", 0.05)
    target_modules: str = doc("layers to adapt: 'all-linear' or comma-separated module names (q_proj,v_proj); "
                              "names the model lacks are an error that lists the ones it has", "all-linear")
    qlora: bool = doc("QLoRA: load the frozen base in 4 bits (NF4, double quantisation, bf16 compute; bitsandbytes, "
                      "CUDA GPUs only)", False)
    save: str = doc("after training: 'merged' = fold the adapter into a full model folder; 'adapter' = save the "
                    "adapter alone on top of the input model (module docstring); cpt, sft, dpo, onestage and "
                    "evaluation read such folders, reward and rejection sampling need merged ones", "merged")


def load_model(path: str | Path, *, dtype="float32", lora: LoraSettings | None = None):
    """(model, tokenizer) from a local folder (or an adapter folder: module docstring); the tokenizer gets
    our chat template where it can (chat.py) and a pad token, the embeddings grow to the tokenizer's size.

    `lora` (the stage's settings) picks how the frozen base is held: bf16 on a GPU for LoRA, 4 bits for QLoRA.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    check_model_dir(path)
    if is_adapter_dir(path):
        return _load_adapter(path, dtype)
    kwargs = _load_kwargs(lora, dtype)
    remote = remote_code_allowed()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=remote, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise QilinError(f"{path}: cannot load as a causal language model ({str(e).splitlines()[0]})") from None
    if lora is not None and lora.enabled:
        resolve_targets(model, lora.target_modules, path)
    ensure_chat_template(tokenizer)
    fit_embeddings(model, tokenizer)
    if model.config.pad_token_id is None:  # batched training and reward heads need it on the model too
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_kwargs(lora: LoraSettings | None, dtype) -> dict:
    """from_pretrained arguments: the dtype, or a 4-bit quantisation for QLoRA (GPU only)."""
    import torch

    cuda = torch.cuda.is_available()
    if lora is not None and lora.enabled and lora.qlora:
        if not cuda:
            raise QilinError("train.lora.qlora: QLoRA loads the base in 4 bits with bitsandbytes, which needs a CUDA "
                             "GPU and this machine has none; use plain LoRA (train.lora.qlora=false)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise QilinError("train.lora.qlora: needs bitsandbytes (pip install bitsandbytes)") from None
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        return {"quantization_config": quant, "dtype": torch.bfloat16,
                "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}
    if lora is not None and lora.enabled and cuda and torch.cuda.is_bf16_supported():
        return {"dtype": torch.bfloat16}  # frozen weights need no fp32 master copy: half the memory
    return {"dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}


def fit_embeddings(model, tokenizer) -> None:
    """Grow the embedding (and output) matrix when the tokenizer has more tokens than the model has rows
    (special tokens added to it); new rows start at the mean of the old ones (transformers' mean_resizing)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        log.warning("tokenizer has %d tokens, the model %d embedding rows: resizing (new rows are untrained)",
                    len(tokenizer), rows)
        model.resize_token_embeddings(len(tokenizer))


def check_model_dir(path: str | Path, what: str = "model folder") -> None:
    """A QilinError unless `path` looks like a Hugging Face model folder (or an adapter folder on one) with a
    tokenizer and whole safetensors weights, whose code is in transformers or allowed to run: checked here,
    in a second, so that a user's mistake is one line naming the folder rather than a traceback from deep
    inside transformers (or a bundled file it reads next)."""
    path = Path(path)
    if not path.exists():
        raise QilinError(f"{path}: {what} not found")
    if not path.is_dir():
        raise QilinError(f"{path}: {what} expected, but this is a file")
    if is_adapter_dir(path):  # lora.save: adapter; its base is checked (recursively) instead
        check_model_dir(adapter_base(path), what)
    else:
        if not (path / "config.json").is_file():
            raise QilinError(f"{path}: no config.json, not a Hugging Face model folder")
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise QilinError(f"{path / 'config.json'}: not readable JSON ({str(e)[:80]})") from None
        if not isinstance(config, dict):
            raise QilinError(f"{path / 'config.json'}: expected a JSON object, got {type(config).__name__}")
        check_remote_code(path, config)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise QilinError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    if not is_adapter_dir(path):
        _check_weights(path)


def remote_code_allowed() -> bool:
    return os.environ.get(REMOTE_CODE_ENV, "").lower() in ("1", "true", "yes")


def check_remote_code(path: Path, config: dict) -> None:
    """Refuse, in one line, a model whose code lives in its folder, unless the user allowed it."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if (config.get("auto_map") or model_type not in CONFIG_MAPPING) and not remote_code_allowed():
        raise QilinError(f"{path}: model_type {model_type!r} runs code from the model folder (trust_remote_code), "
                         f"not from transformers; read that code, then pass `qilin --trust-remote-code ...` "
                         f"(or set {REMOTE_CODE_ENV}=1) to allow it")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file() and not (Path(path) / "config.json").is_file()


def adapter_base(path: Path) -> Path:
    """The model folder an adapter folder was trained on (its adapter_config.json says)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise QilinError(f"{path}/adapter_config.json: not readable JSON ({str(e)[:80]})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not Path(base).is_dir():
        raise QilinError(f"{path}: a LoRA adapter whose base model folder {base!r} is missing; merge it into its "
                         "base model first, or restore that folder")
    return Path(base)


def _load_adapter(path: Path, dtype):
    """Base (recursively) + this adapter, merged: the full model the adapter's stage produced."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, _ = load_model(adapter_base(path), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    # A new adapter trained on this model must name this folder as its base, not the one below it.
    model.name_or_path = model.config._name_or_path = str(path.resolve())  # PEFT reads the first
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=remote_code_allowed())
    ensure_chat_template(tokenizer)
    return model, tokenizer


def resolve_targets(model, targets: str, where: str | Path = "model") -> list[str]:
    """The short names of the linear layers a LoRA `target_modules` setting adapts in `model`; a QilinError
    naming the ones it has when a named one is missing (e.g. q_proj on Baichuan's fused W_pack)."""
    import torch

    head = model.get_output_embeddings()
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not head})  # bitsandbytes' Linear4bit is one too
    if targets == "all-linear":
        return names
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    missing = [t for t in wanted if t not in names]
    if missing:
        raise QilinError(f"train.lora.target_modules: {', '.join(missing)} not in {where} "
                         f"({type(model).__name__} has {', '.join(names)})")
    return wanted

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


def save_model(model, tokenizer, out_dir: str | Path, *, adapter_only: bool = False) -> Path:
    """Save model + tokenizer to `out_dir`, whole or not at all; mark it complete. A LoRA adapter is merged
    first, or with `adapter_only` saved alone (its base the folder the model was loaded from).

    The files go to a temporary sibling folder first, which is renamed into place; a kill mid-save
    leaves only the temporary folder, which the next save replaces.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if adapter_only and isinstance(model, PeftModel):
        model.save_pretrained(str(tmp))
        _absolute_base(tmp / "adapter_config.json")
    else:
        merged = _merge_quantized(model) if getattr(model, "is_loaded_in_4bit", False) else merge_lora(model)
        if merged.config.pad_token_id is None:
            merged.config.pad_token_id = tokenizer.pad_token_id
        merged.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out_dir.exists():  # an earlier, unmarked (incomplete) save
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    atomic_write_text(out_dir / MODEL_DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return out_dir


def _absolute_base(adapter_config: Path) -> None:
    """The adapter's base as an absolute path: the run folder may be read from another working directory."""
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(Path(config["base_model_name_or_path"]).resolve())
    atomic_write_text(adapter_config, json.dumps(config, indent=2) + "\n")


def _merge_quantized(model):
    """A QLoRA model merged into a bf16 copy of its base: folding an adapter into 4-bit weights would round
    it away, so the base is reloaded unquantised (on the host) and the adapter merged there."""
    import tempfile

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = model.peft_config["default"].base_model_name_or_path
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16,
                                                    trust_remote_code=remote_code_allowed())
        return PeftModel.from_pretrained(base, tmp).merge_and_unload()
