"""`qilin plan RECIPE.yaml`: the memory plan of every training stage before anything loads (stages.py)."""

from __future__ import annotations

from qilin.errors import QilinError
from qilin.plan.memory import GB, PAIRED, SHARDINGS, Device
from qilin.plan.shape import Shape
from qilin.plan.fit import PROFILES, StagePlan

HELP = "per-GPU memory of every training stage of a recipe, fits or not and what would, tokens and time"


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help=HELP, description=HELP + ". Estimates: docs/MEMORY.md.")
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/qilin-med-7b.yaml")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. base.model=/models/Qwen2.5-7B")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the launch trains on (default 1); 0 = the CPU")
    p.add_argument("--gpu-mem", type=float, help="memory per GPU in GB (required unless --gpus 0)")
    p.add_argument("--sharding", choices=SHARDINGS, help="how a multi-GPU launch splits the model: none (DDP), zero2, "
                   "zero3 (DeepSpeed profiles) or fsdp; default zero2 with several GPUs (the 7B recipes' launch)")
    p.add_argument("--model-config", help="a config.json (or its folder) to plan for instead of base.model's")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak per GPU for the time "
                   "estimate (H100 SXM 989, A100 312, 4090 165)")
    p.add_argument("--utilisation", type=float, default=0.4, help="model FLOP utilisation assumed (default 0.4)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from qilin.plan.fit import model_shape, plan_recipe
    from qilin.recipe import load_recipe

    device = _device(args)
    recipe = load_recipe(args.recipe, args.overrides)
    shape = model_shape(recipe, args.model_config)
    plans = plan_recipe(recipe, device, shape)
    print("\n".join(render(recipe.name, shape, plans, device)))
    return 0


def _device(args) -> Device:
    if args.gpus < 0 or not 0 < args.utilisation <= 1:
        raise QilinError("plan: --gpus must be >= 0 and --utilisation in (0, 1]")
    if args.gpu_mem is not None and args.gpu_mem <= 1:
        raise QilinError("plan: --gpu-mem is the memory of one device in GB: more than 1")
    if args.gpus == 0:
        if args.sharding not in (None, "none"):
            raise QilinError("plan: --sharding needs GPUs")
        from qilin.plan.fit import detect_device

        return detect_device() if args.gpu_mem is None else Device(mem_gb=args.gpu_mem, cpu=True, peak_tflops=0.1)
    if args.gpu_mem is None:
        raise QilinError("plan: --gpu-mem GB (memory per GPU) is required with --gpus")
    sharding = args.sharding or ("zero2" if args.gpus > 1 else "none")
    return Device(gpus=args.gpus, mem_gb=args.gpu_mem, sharding=sharding, peak_tflops=args.peak_tflops,
                  utilisation=args.utilisation)


def render(name: str, shape: Shape, plans: list[StagePlan], device: Device) -> list[str]:
    """The plan as text: one block per stage, parts in GB, the verdict and what would fit."""
    where = "the CPU (fp32), host RAM" if device.cpu else f"{device.gpus} x {device.mem_gb:g} GB GPU, sharding " \
        f"{device.sharding}" + (f" ({PROFILES[device.sharding]})" if device.sharding in PROFILES else "")
    lines = [f"qilin plan: {name} on {where}; usable per device {device.usable_gb:.1f} GB"
             + ("" if device.cpu else " (1 GB CUDA context off, then 95% for the allocator's fragmentation)")]
    count = "counted on the meta device" if shape.exact else "Llama formula from config.json: its code is not in " \
        "transformers"
    lines.append(f"model: {shape.model_type}, {shape.params / 1e9:.2f}B parameters ({count}), {shape.layers} layers, "
                 f"hidden {shape.hidden}, vocabulary {shape.vocab}")
    if not plans:
        lines.append("no training stages")
    for sp in plans:
        lines += [""] + _stage_lines(sp, device)
    lines += ["", "memory model: bytes per parameter (ZeRO paper, Rajbhandari et al. 2020), activations per layer "
              "(Korthikanti et al. 2022, redone for Llama-style layers); time: 6 x params FLOPs per token "
              "(Kaplan et al. 2020) + attention (PaLM appendix B); docs/MEMORY.md compares them with measured peaks"]
    return lines


def _stage_lines(sp: StagePlan, device: Device) -> list[str]:
    w = sp.work
    per = "pairs" if w.kind in PAIRED else "sequences"
    head = (f"{sp.name}: {w.method}{f' r {w.lora_r}' if w.method != 'full' else ''}, micro-batch {w.batch} {per} x "
            f"{w.seq} tokens, gradient checkpointing {'on' if w.checkpointing else 'off'}"
            + (" (complete, will be skipped)" if sp.complete else ""))
    lines = [head] + [f"  {k:<36} {v / GB:8.2f} GB" for k, v in sp.parts.items()]
    verdict = "fits" if sp.fits else "DOES NOT FIT"
    lines.append(f"  {'total per device':<36} {sp.total_gb:8.2f} GB   {verdict} ({device.usable_gb:.1f} GB usable)")
    if not sp.fits:
        lines.append(f"  would fit with: {', '.join(sp.fix[0])} ({sp.fix[1]:.2f} GB)" if sp.fix else
                     "  nothing qilin knows makes it fit: more or larger GPUs, or a smaller model")
    if sp.merge != (0.0, 0.0):
        host = f", host RAM {sp.merge[1] / GB:.1f} GB (the main process reloads the base to merge)" if sp.merge[1] \
            else ""
        lines.append(f"  LoRA merge after training: {sp.merge[0] / GB:.2f} GB on the device (in place, one layer's "
                     f"delta at a time){host}")
    lines += [f"  {_tokens_line(sp, device)}"] + [f"  note: {n}" for n in sp.notes]
    return lines


def _tokens_line(sp: StagePlan, device: Device) -> str:
    if sp.tokens is None:
        return f"tokens: {sp.tokens_from}"
    unit = f"{device.peak_tflops:g} TFLOP/s {'fp32 (CPU, measured)' if device.cpu else 'bf16 peak'}"
    return (f"tokens: ~{sp.tokens / 1e6:.2f}M ({sp.tokens_from}); time ~{_duration(sp.seconds)} at "
            f"{device.utilisation:.0%} of {device.gpus} x {unit}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
