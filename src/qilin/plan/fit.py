"""The memory plan of a recipe: every training stage's per-device memory, a verdict, and what would fit.

Nothing is loaded: the model's size comes from its config.json (shape.py), the stages' settings from
the recipe's typed configs (qilin.recipe.plan), the bytes from memory.py. `check_fits` is what
`qilin run` calls before it starts: it stops with one line at the first stage that cannot fit.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from qilin.errors import QilinError
from qilin.plan import memory
from qilin.plan.memory import GB, Device, Work
from qilin.plan.shape import Shape, read_config, shape_of, tiny_shape

PROFILES = {"zero2": "configs/accelerate/deepspeed-zero2.yaml", "zero3": "configs/accelerate/deepspeed-zero3.yaml",
            "fsdp": "configs/accelerate/fsdp.yaml"}
BYTES_PER_TOKEN = 4.5  # data files: UTF-8 Chinese is 3 bytes a character, ~1.5 characters a token


@dataclass
class StagePlan:
    name: str
    work: Work
    parts: dict[str, float]
    device: Device
    fix: tuple[list[str], float] | None = None  # (the changes, GB with them) when it does not fit
    merge: tuple[float, float] = (0.0, 0.0)   # (device, host) bytes of the LoRA merge
    tokens: float | None = None
    tokens_from: str = ""  # how the tokens were counted
    seconds: float | None = None
    data: Path | None = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values()) / GB  # the merge runs after training: planned on its own (merge)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.device.usable_gb


def model_shape(recipe, model_config: str | Path | None = None) -> Shape:
    """The shape of the recipe's base model: --model-config, else base.model's config.json, else the tiny default."""
    from qilin import config as qconfig
    from qilin.train import base

    if model_config is not None:
        return shape_of(read_config(model_config))
    if recipe.base.get("model"):
        return shape_of(read_config(recipe.base["model"]))
    cfg = qconfig.build(base.Config, {**recipe.base, "out": Path(recipe.out) / "01-base"}, "base")
    return tiny_shape(cfg.tiny, cfg.vocab_size)


def plan_recipe(recipe, device: Device, shape: Shape | None = None) -> list[StagePlan]:
    """One StagePlan per training stage of `recipe`, in order (for `shape`, default the recipe's model)."""
    from qilin.recipe import plan

    shape = shape or model_shape(recipe)
    plans = []
    for name, run, cfg in plan(recipe):
        kind = _training_kind(cfg)
        if kind is None or (kind == "base" and cfg.model is not None):  # base trains only the tiny default
            continue
        work = stage_work(kind, cfg)
        plans.append(plan_stage(name, shape, work, device, data=getattr(cfg, "data", None)
                                if kind != "base" else cfg.pretrain_data, settings=cfg.train,
                                complete=run.is_complete()))
    return plans


def _training_kind(cfg) -> str | None:
    """The stage name of a config whose stage trains through the Trainer (its record says), else None."""
    from qilin.stages import STAGES

    module = type(cfg).__module__
    return next((name for name, s in STAGES.items() if s.module == module and s.every_process), None)


def stage_work(kind: str, cfg) -> Work:
    """The memory-relevant choices of a stage's typed config."""
    t = cfg.train
    seq = getattr(cfg, "block_size", None) or t.max_length
    method = "full" if not t.lora.enabled else ("qlora" if getattr(t.lora, "qlora", False) else "lora")
    return Work(kind, t.batch_size, seq, method, t.lora.r, t.lora.target_modules, t.lora.dropout,
                t.gradient_checkpointing, t.grad_accum)


def plan_stage(name: str, shape: Shape, work: Work, device: Device, data: Path | None = None, settings=None,
               complete: bool = False) -> StagePlan:
    sp = StagePlan(name, work, memory.estimate(shape, work, device), device, data=data, complete=complete)
    sp.merge = memory.merge_bytes(shape, work, device)
    if not sp.fits:
        sp.fix = suggest(shape, work, device)
    if settings is not None:
        sp.tokens, sp.tokens_from = _tokens(work, device, settings, data)
    if sp.tokens:
        flops = sp.tokens * memory.train_flops_per_token(shape, work)
        sp.seconds = flops / (device.gpus * device.peak_tflops * 1e12 * device.utilisation)
    if work.method == "qlora" and device.cpu:
        sp.notes.append("QLoRA needs a CUDA GPU (bitsandbytes): it cannot run on the CPU")
    return sp


def suggest(shape: Shape, work: Work, device: Device) -> tuple[list[str], float] | None:
    """The cheapest set of changes under which the stage fits: smaller micro-batches (gradient accumulation
    keeps the effective batch), then gradient checkpointing (a third more compute), then a stronger
    sharding (a launch profile), then LoRA, then QLoRA (they change what is trained)."""
    best = None
    for halvings, ckpt, sharding, method in itertools.product(
            range(int(work.batch).bit_length()), (work.checkpointing, True), _shardings(device),
            _methods(work, device)):
        changes = {"batch": max(1, work.batch >> halvings), "grad_accum": work.grad_accum << halvings,
                   "checkpointing": ckpt, "method": method, "sharding": sharding}
        w, d = memory.with_changes(work, device, **changes)
        total = sum(memory.estimate(shape, w, d).values()) / GB
        if total > d.usable_gb:
            continue
        cost = halvings + 2 * (ckpt != work.checkpointing) + 5 * (sharding != device.sharding) + \
            20 * ["full", "lora", "qlora"].index(method) - 20 * ["full", "lora", "qlora"].index(work.method)
        if best is None or cost < best[0]:
            best = (cost, _describe(work, device, w, d), total)
    return (best[1], best[2]) if best else None


def _shardings(device: Device) -> list[str]:
    if device.cpu or device.gpus == 1:
        return [device.sharding]
    order = ["none", "zero2", "zero3", "fsdp"]
    return order[order.index(device.sharding):]


def _methods(work: Work, device: Device) -> list[str]:
    order = ["full", "lora"] + ([] if device.cpu else ["qlora"])
    return order[order.index(work.method):] if work.method in order else [work.method]


def _describe(old: Work, old_device: Device, new: Work, device: Device) -> list[str]:
    """The changes as the key=value overrides (and launch profile) a user would type."""
    out = []
    if new.batch != old.batch:
        out.append(f"train.batch_size={new.batch} train.grad_accum={new.grad_accum}")
    if new.checkpointing != old.checkpointing:
        out.append("train.gradient_checkpointing=true")
    if device.sharding != old_device.sharding:
        out.append(f"launch with {PROFILES[device.sharding]}")
    if new.method != old.method:
        out.append("train.lora.enabled=true" + (" train.lora.qlora=true" if new.method == "qlora" else ""))
    return out


def _tokens(work: Work, device: Device, settings, data: Path | None) -> tuple[float | None, str]:
    """Tokens the stage trains on: max_steps' worth, else epochs over the data file (its size / 4.5 bytes)."""
    per_step = work.sequences * work.seq * settings.grad_accum * device.gpus
    if settings.max_steps > 0:
        return float(settings.max_steps * per_step), f"max_steps x {per_step} tokens a step, at most"
    if data is not None and Path(data).is_file():
        return (settings.epochs * os.path.getsize(data) / BYTES_PER_TOKEN,
                f"{Path(data).name}: bytes / {BYTES_PER_TOKEN} a token x {settings.epochs:g} epochs")
    return None, f"unknown until {data} exists (the data stage writes it)"


def detect_device() -> Device:
    """This process's device as a launch sees it: the GPUs (WORLD_SIZE of them, sharded as the accelerate
    profile says) or the host's RAM."""
    import torch

    if not torch.cuda.is_available():
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
        return Device(gpus=1, mem_gb=ram, cpu=True, peak_tflops=0.1)
    gpus = int(os.environ.get("WORLD_SIZE", "1"))
    sharding = "none"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        sharding = "zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "zero2"
    elif os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        sharding = "fsdp"
    mem = torch.cuda.get_device_properties(0).total_memory / GB
    return Device(gpus=gpus, mem_gb=mem, sharding=sharding)


def check_fits(recipe, device: Device | None = None, force: bool = False) -> list[StagePlan]:
    """Plan `recipe` for this machine; a QilinError naming the first incomplete stage that cannot fit and
    what would, unless `force`."""
    if force:
        return []
    device = device or detect_device()
    plans = plan_recipe(recipe, device)
    for sp in plans:
        if not sp.complete and not sp.fits:
            where = "the host's RAM" if device.cpu else f"{device.gpus} x {device.mem_gb:.0f} GB ({device.sharding})"
            fix = f"; it would fit with {' and '.join(sp.fix[0])} ({sp.fix[1]:.1f} GB)" if sp.fix else \
                "; no change qilin knows makes it fit"
            raise QilinError(f"{sp.name}: needs {sp.total_gb:.1f} GB per device, {where} leaves "
                             f"{device.usable_gb:.1f} GB{fix}; `qilin plan` shows the parts, --force runs anyway")
    return plans
