"""Per-device memory of one training stage, part by part, and the time its tokens take.

Bytes per parameter (P all parameters, T the trained ones, N the devices a launch shards over):

- CPU (fp32 throughout): weights 4P, gradients 4T, AdamW's two moments 8T.
- GPU, one process or DDP (bf16 autocast, the Trainer's `bf16=True`): fp32 weights 4P (they are the
  master weights), their bf16 copies made by autocast and kept for the backward pass 2T, fp32 gradients
  4T, AdamW 8T, and under DDP its reduction buckets, a second copy of the gradients, 4T: 18 bytes per
  parameter in one process, the "18 GB per billion" rule of thumb.
- DeepSpeed ZeRO (Rajbhandari et al. 2020, "ZeRO", section 5, K = 12: fp32 master weights and the two
  AdamW moments): ZeRO-2 2P + (2 + 12)T/N, ZeRO-3 (2 + 2 + 12)P/N plus the layers gathered at a time.
- FSDP full shard (accelerate's bf16 mixed precision keeps fp32 flat shards): (4 + 4 + 8)P/N plus the
  gathered bf16 layers and their gradients.
- LoRA: the frozen base in bf16 on a GPU (2P; fp32 on CPU), the adapter trained as above (T = r x (in + out)
  per adapted layer). QLoRA (Dettmers et al. 2023): the decoder's linear weights in NF4 with double
  quantisation, 4.127 bits each (0.516 bytes), everything else bf16.
- DPO with full fine-tuning: TRL loads a frozen reference copy in the policy's dtype (fp32; DeepSpeed casts
  it to bf16 and ZeRO-3 shards it, FSDP shards it). With LoRA the reference is the same network with
  the adapter disabled: no copy.

Activations, per decoder layer, sequences b x s tokens: Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", eq. 1) count s*b*h*(34 + 5*a*s/h) bytes at 16 bits for
GPT (4h MLP, LayerNorm, dropout, materialised attention scores). Redone for the Llama layout that every
family here shares (RMSNorm, RoPE, fused SDPA that stores no s x s scores, no dropout, SwiGLU of width
f), in elements saved for the backward pass per token: the two norms' inputs and outputs 4h, RoPE's
inputs of q and k h + kv, SDPA's q, k, v and output 2h + 2kv, the output projection's input h, the
SwiGLU's gate, activation, up and product 4f, where kv = key/value heads x head width; 8h + 3kv + 4f
in all. LoRA with dropout adds, per adapted layer, its input after dropout and the dropout mask (one byte):
PEFT drops out each adapter's input separately (measured: +511 MB at 17M, 4,096 tokens, planned +550). Gradient checkpointing keeps each layer's input (h per token) and recomputes one layer at a time.
CPU elements are fp32 (4 bytes), GPU ones bf16 (2).

The output layer is counted in fp32 buffers of b x s x vocab values at its peak in the backward pass
(HEAD_BUFFERS): with the model's own cross-entropy (cpt and sft on the CPU, model/train/common.py) four:
the logits, the log-probabilities the loss keeps, and the gradients of both. DPO on the CPU runs TRL 1.16's
chunked log-probability head through its plain-torch fallback, which keeps every chunk for the backward
pass: eight buffers, measured (benchmarks/bench_memory.py; not derived). On a GPU TRL's Triton kernel
keeps no whole logits; one buffer is planned as a margin. A reward model has a scalar head: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from qilin.plan.shape import Shape, lora_targets

GB = 1e9
SHARDINGS = ("none", "zero2", "zero3", "fsdp")
NF4_BYTES = 4.127 / 8  # NF4 + double quantisation (QLoRA paper, section 3): 4 bits + 0.127 bits of constants
CUDA_RESERVED_GB = 1.0  # CUDA context, cuBLAS workspace: memory no tensor gets
HEADROOM = 0.95  # the caching allocator's fragmentation: plan to fill at most 95% of the rest
# fp32 (tokens x vocab) buffers the output layer holds at its peak (module docstring): (cpu, kind) -> count
HEAD_BUFFERS = {(True, "dpo"): 8, (True, "reward"): 0, (False, "reward"): 0}
HEAD_DEFAULT = {True: 4, False: 1}
PAIRED = ("dpo", "orpo", "reward")  # stages whose examples are (chosen, rejected) pairs: two sequences each


@dataclass(frozen=True)
class Device:
    gpus: int = 1
    mem_gb: float = math.inf     # memory per device (the host's RAM when cpu)
    sharding: str = "none"       # how a multi-GPU launch splits the model: SHARDINGS
    cpu: bool = False            # training on the CPU (fp32), as on machines without a GPU
    peak_tflops: float = 989.0   # dense peak per device: bf16 on a GPU (H100 SXM; A100 312), fp32 on a CPU
    utilisation: float = 0.4     # model FLOP utilisation assumed for the time estimate

    @property
    def usable_gb(self) -> float:
        return (self.mem_gb - (0 if self.cpu else CUDA_RESERVED_GB)) * HEADROOM


@dataclass(frozen=True)
class Work:
    """What one stage trains: the choices the plan may suggest changing are fields here."""
    kind: str                    # cpt, sft, dpo, reward, ...
    batch: int                   # examples (preference pairs for dpo/reward) per device per micro-batch
    seq: int                     # tokens per sequence (the longest a batch may hold)
    method: str = "full"         # full, lora, qlora
    lora_r: int = 8
    lora_targets: str = "all-linear"
    lora_dropout: float = 0.0
    checkpointing: bool = False
    grad_accum: int = 1

    @property
    def sequences(self) -> int:
        """Sequences per micro-batch: a preference pair is two (chosen and rejected)."""
        return self.batch * (2 if self.kind in PAIRED else 1)


def trained_params(shape: Shape, work: Work) -> int:
    return shape.params if work.method == "full" else shape.lora_params(work.lora_r, work.lora_targets)


def estimate(shape: Shape, work: Work, device: Device) -> dict[str, float]:
    """Bytes per device by part (module docstring), in the order a reader adds them up."""
    parts = _weights(shape, work, device) | _training_state(shape, work, device)
    parts["activations"] = activation_bytes(shape, work, device)
    if work.kind == "dpo" and work.method == "full":
        parts["reference model"] = _reference(shape, device)
    return parts


def _weights(shape: Shape, work: Work, device: Device) -> dict[str, float]:
    P, n = shape.params, device.gpus
    if device.cpu:
        return {"weights (fp32)": 4 * P}
    if work.method == "qlora":
        return {"weights (NF4 linear + bf16 rest)": NF4_BYTES * shape.linear_params
                + 2 * (P - shape.linear_params)}
    if work.method == "lora":
        return {"weights (bf16, frozen)": 2 * P / (n if device.sharding in ("zero3", "fsdp") else 1)}
    gathered = 2 * 2 * 2 * (P - shape.embedding - shape.output) / max(shape.layers, 1)  # 2 layers + grads, bf16
    return {"none": {"weights (fp32 master)": 4 * P, "bf16 copies (autocast)": 2 * P},
            "zero2": {"weights (bf16)": 2 * P},
            "zero3": {"weights (bf16, sharded)": 2 * P / n, "gathered layers": gathered},
            "fsdp": {"weights (fp32, sharded)": 4 * P / n, "gathered layers": gathered}}[device.sharding]


def _training_state(shape: Shape, work: Work, device: Device) -> dict[str, float]:
    T, n = trained_params(shape, work), device.gpus
    if device.cpu:
        return {"gradients (fp32)": 4 * T, "AdamW moments (fp32)": 8 * T}
    if work.method != "full":  # the adapter is fp32 (PEFT's autocast_adapter_dtype) and not worth sharding
        return {"adapter + gradients + AdamW": 16 * T}
    if device.sharding == "none":
        ddp = {"DDP gradient buckets": 4 * T} if n > 1 else {}
        return {"gradients (fp32)": 4 * T, "AdamW moments (fp32)": 8 * T} | ddp
    if device.sharding == "zero2":
        return {"gradients (bf16, sharded)": 2 * T / n, "master + AdamW (fp32, sharded)": 12 * T / n}
    if device.sharding == "zero3":
        return {"gradients (bf16, sharded)": 2 * T / n, "master + AdamW (fp32, sharded)": 12 * T / n}
    return {"gradients (fp32, sharded)": 4 * T / n, "AdamW moments (fp32, sharded)": 8 * T / n}


def _reference(shape: Shape, device: Device) -> float:
    P, n = shape.params, device.gpus
    if device.cpu:
        return 4 * P
    return {"none": 4 * P, "zero2": 2 * P, "zero3": 2 * P / n, "fsdp": 4 * P / n}[device.sharding]


def activation_bytes(shape: Shape, work: Work, device: Device) -> float:
    """Saved activations at their peak (end of the forward pass) plus the output layer's buffers."""
    e = 4 if device.cpu else 2
    tokens = work.sequences * work.seq
    kv = shape.kv_heads * shape.head_dim
    per_layer = tokens * (8 * shape.hidden + 3 * kv + 4 * shape.ffn) * e
    if work.method != "full" and work.lora_dropout > 0:  # each adapter keeps its dropped-out input and the mask
        inputs = sum(shape.linear[n][0] for n in lora_targets(shape.linear, work.lora_targets))
        per_layer += tokens * inputs * (e + 1)
    if work.checkpointing:
        layers = shape.layers * tokens * shape.hidden * e + per_layer
    else:
        layers = shape.layers * per_layer
    buffers = HEAD_BUFFERS.get((device.cpu, work.kind), HEAD_DEFAULT[device.cpu])
    return layers + buffers * tokens * shape.vocab * 4


def merge_bytes(shape: Shape, work: Work, device: Device) -> tuple[float, float]:
    """(device, host) bytes of merging a LoRA adapter into its base after training.

    In one process the merge runs in place, one layer's delta (B @ A) at a time; under a multi-process
    launch the main process reloads the base on the host in its saved dtype (bf16 for real models) to merge.
    """
    if work.method == "full":
        return 0.0, 0.0
    widest = max((i * o for i, o in shape.linear.values()), default=0)
    e = 4 if device.cpu else 2
    return widest * e, (2 * shape.params if device.gpus > 1 else 0.0)


def train_flops_per_token(shape: Shape, work: Work) -> float:
    """FLOPs per trained token: 6P for forward and backward of a dense model (Kaplan et al. 2020), plus
    attention's 12 x layers x hidden x seq (PaLM, Chowdhery et al. 2022, appendix B). LoRA skips the
    frozen weights' gradients (4P); checkpointing recomputes the forward (+2P); DPO's reference adds a
    forward pass (2P) per token."""
    P, attn = shape.params, 12 * shape.layers * shape.hidden * work.seq
    flops = (6 if work.method == "full" else 4) * P + attn
    if work.checkpointing:
        flops += 2 * P + attn / 3
    if work.kind == "dpo":
        flops += 2 * P + attn / 3
    return flops


def with_changes(work: Work, device: Device, **changes) -> tuple[Work, Device]:
    """`work` and `device` with some fields changed (the plan's what-if)."""
    sharding = changes.pop("sharding", device.sharding)
    return replace(work, **changes), replace(device, sharding=sharding)
