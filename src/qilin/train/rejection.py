"""The `rejection` stage: rejection-sampling RLHF with a reward model (ChiMed-GPT, METHODS.md 2).

One round t, for each prompt of this round's share of the prompt pool:
  1. sample N answers from the current policy (model/generate.py: vLLM if installed, else transformers);
     optionally add answers from other sources as candidates (`candidates`): the pool's reference answer
     and answers from an OpenAI-compatible endpoint, as ChiMed-GPT ranks the policy's answers together
     with answers from other sources;
  2. score every candidate with the reward model (train/reward.py);
  3. keep the top K of all candidates (optionally only those that beat the reward of the pool's reference
     answer);
  4. fine-tune the policy on the kept (prompt, answer) pairs with the SFT loss (train/sft.py);
and repeat for T rounds, each round starting from the previous round's model.

Each round is a folder that can be inspected and resumed step by step:

    round1/samples.jsonl  every prompt with its N answers, their rewards, the reference's reward and the other
                          candidates ({text, origin, reward})
    round1/endpoint.jsonl the endpoint's answers (when asked for), kept so a resumed round does not pay twice
    round1/kept.jsonl     the kept answers as SFT conversations (what the round trains on)
    round1/stats.json     N, K, T, sampling settings, mean/std of the reward over sampled and kept answers
    round1/model/ ...     the round's SFT run folder (config, history, checkpoints while training, manifest)
    round1/eval/          the benchmark evaluation of the round's model (when `eval_data` is set)
    eval/rows.json        one summary row per round: {"<stage>.round1": {reward.*, benchmark metrics}, ...}
    eval/metrics.json     the last round's evaluation: the stage's own row
    model -> roundT/model the stage's output model (a relative link, no copy of the weights)

A killed run redoes only the unfinished step of the unfinished round. Every round samples the same
prompts (a seeded draw from the pool), as in iterative rejection sampling, so the rounds' mean rewards
are comparable: per-prompt reward varies far more between prompts than between answers, and disjoint
prompt sets (`fresh_prompts`) mix that difference into the trend. On the same prompts a rise includes
fitting them; the benchmark evaluation after every round is on held-out data.
"""

from __future__ import annotations

import logging
import os
import random
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qilin import dist
from qilin.config import doc
from qilin.data.generators import GeneratorSettings
from qilin.errors import InputError, QilinError
from qilin.eval.tasks import EvalConfig
from qilin.model.generate import Sampling
from qilin.runs import RunFolder, atomic_write_json, atomic_write_jsonl, read_json
from qilin.train.common import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    reference: bool = doc("rank the pool's reference answer together with the policy's samples (it may be kept)",
                          False)
    endpoint: GeneratorSettings | None = doc(
        "answers from an OpenAI-compatible endpoint ranked with the samples: {kind: openai, base_url, model, "
        "concurrency, ...} (qilin.data.generators.GeneratorSettings); null = none", None)
    endpoint_n: int = doc("answers per prompt from the endpoint", 1)


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input policy model folder (the SFT model)")
    data: Path = doc('prompt pool: JSONL of {"messages"} conversations (the first user turn is the prompt, the '
                     'assistant turn after it the reference answer)')
    reward_model: Path | None = doc("reward model folder (a reward stage's model/); in a recipe, the reward stage "
                                    "before this one", None)
    rounds: int = doc("T: rounds of sample -> score -> keep -> fine-tune", 2)
    prompts: int = doc("prompts per round, a seeded draw from the pool", 64)
    fresh_prompts: bool = doc("draw new prompts every round (disjoint while the pool lasts) instead of reusing "
                              "round 1's: fresh prompts test generalisation, but their difficulty differs from "
                              "round to round, so the rounds' mean rewards are not comparable", False)
    keep: int = doc("K: answers kept per prompt, the highest-reward ones", 1)
    beat_reference: bool = doc("keep only answers whose reward exceeds the reference answer's", False)
    stop_when_flat: bool = doc("stop before round T when a round's mean sampled reward does not exceed the "
                               "previous round's (the policy stopped improving)", True)
    max_prompt_chars: int = doc("skip pool prompts longer than this (characters): sampling time grows with them",
                                300)
    sampling: Sampling = doc("sampling settings (N = sampling.n)", lambda: Sampling())
    candidates: Candidates = doc("answers from other sources ranked with the policy's samples (module docstring); "
                                 "the reward statistics of the rounds stay those of the policy's samples",
                                 lambda: Candidates())
    packing: Literal["bfd", "none"] = doc("SFT packing of every round's fine-tuning (train/sft.py `packing`)", "bfd")
    score_batch_size: int = doc("sequences per reward-model forward pass", 32)
    train: TrainSettings = doc("fine-tuning hyper-parameters of every round (SFT loss on the kept answers)",
                               lambda: TrainSettings(lr=1e-4, epochs=1.0, batch_size=8))
    eval_data: Path | None = doc("data stage folder whose eval/ sets evaluate every round's model (the recipe "
                                 "sets it); null = no per-round benchmark evaluation", None)
    eval: EvalConfig = doc("evaluation of every round's model (the recipe passes its own)", lambda: EvalConfig())


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    _check(cfg)
    pool = prompt_pool(cfg.data, cfg.max_prompt_chars)  # input errors before any model loads
    run.write_config(cfg)
    order = list(range(len(pool)))
    random.Random(cfg.train.seed).shuffle(order)
    policy, rows = Path(cfg.model), {}
    for t in range(1, cfg.rounds + 1):
        start = (t - 1) * cfg.prompts if cfg.fresh_prompts else 0
        share = [pool[order[(start + i) % len(pool)]] for i in range(min(cfg.prompts, len(pool)))]
        policy, row = _round(cfg, t, share, policy)
        previous = rows[next(reversed(rows))] if rows else None
        rows[f"{_row_prefix(run.path)}.round{t}"] = row
        dist.on_main(atomic_write_json, run.path / "eval" / "rows.json", rows)
        if cfg.stop_when_flat and previous and row["reward.mean_sampled"] <= previous["reward.mean_sampled"]:
            log.info("rejection: mean sampled reward did not rise in round %d (%.3f <= %.3f); stopping", t,
                     row["reward.mean_sampled"], previous["reward.mean_sampled"])
            break
    dist.on_main(_finish_rounds, run, policy)
    return run.finish(inputs={"model": cfg.model, "reward_model": cfg.reward_model, "data": cfg.data},
                      seed=cfg.train.seed, extra={"model": str(run.model_dir), "rounds": len(rows)})


def prompt_pool(path: str | Path, max_chars: int) -> list[dict]:
    """[{"prompt", "reference", "pool_index"}]: each conversation's first user turn and the assistant turn
    after it; repeated prompts once, over-long ones skipped."""
    from qilin.train.common import load_jsonl

    pool, seen = [], set()
    for n, record in enumerate(load_jsonl(path, ["messages"]), 1):
        turns = record["messages"]
        user = next((i for i, m in enumerate(turns) if isinstance(m, dict) and m.get("role") == "user"), None)
        if user is None or user + 1 >= len(turns) or turns[user + 1].get("role") != "assistant":
            raise InputError(path, n, "messages", "expected a user turn followed by an assistant turn")
        prompt, reference = turns[user]["content"], turns[user + 1]["content"]
        if prompt in seen or len(prompt) > max_chars or not reference:
            continue
        seen.add(prompt)
        pool.append({"prompt": prompt, "reference": reference, "pool_index": n - 1})
    if not pool:
        raise QilinError(f"{path}: no prompt of at most {max_chars} characters with a reference answer")
    return pool


def _round(cfg: Config, t: int, share: list[dict], policy: Path) -> tuple[Path, dict]:
    """One round, each step skipped when its output exists: sample+score, keep, fine-tune, evaluate."""
    from qilin.eval.results import evaluate_heldout
    from qilin.train import sft

    # Under a multi-process launch, sampling, keeping and evaluation run in the main process and the
    # fine-tuning in every process (qilin.dist).
    # The main process decides whether a step is done: another process's check could race its write.
    folder = Path(cfg.out) / f"round{t}"
    main = dist.is_main()
    if main and not (folder / "samples.jsonl").is_file():
        _sample_and_score(cfg, t, share, policy, folder)
    if main and not (folder / "stats.json").is_file():
        _keep_answers(cfg, t, folder)
    dist.barrier()
    sft.run(sft.Config(out=folder, model=policy, data=folder / "kept.jsonl", train=cfg.train, packing=cfg.packing))
    model = folder / "model"
    row = dict(read_json(folder / "stats.json"))
    if cfg.eval_data is not None:
        if main and not (folder / "eval" / "metrics.json").is_file():
            evaluate_heldout(model, cfg.eval_data, cfg.eval, folder / "eval")
        dist.barrier()
        row.update(read_json(folder / "eval" / "metrics.json")["metrics"])
    return model, row


def _keep_answers(cfg: Config, t: int, folder: Path) -> None:
    samples = _read_jsonl(folder / "samples.jsonl")
    kept = _keep(samples, cfg.keep, cfg.beat_reference)
    if not kept:
        raise QilinError(f"round {t}: no answer was kept (beat_reference={cfg.beat_reference}); "
                         "sample more (sampling.n, prompts) or set beat_reference=false")
    atomic_write_jsonl(folder / "kept.jsonl", kept)
    atomic_write_json(folder / "stats.json", _stats(cfg, t, samples, kept))


def _sample_and_score(cfg: Config, t: int, share: list[dict], policy: Path, folder: Path) -> None:
    import dataclasses
    import gc
    import time

    from qilin.model.generate import backend_for, sample
    from qilin.train.reward import load_reward_model, score

    settings = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + t)  # fresh answers every round
    started = time.time()
    answers = sample(policy, [s["prompt"] for s in share], settings)
    seconds = time.time() - started
    gc.collect()
    others = _other_candidates(cfg, t, share, folder)  # [[{"text", "origin"}]] per prompt
    model, tokenizer = load_reward_model(cfg.reward_model)
    texts = [[s["reference"], *a, *(o["text"] for o in other)] for s, a, other in zip(share, answers, others)]
    prompts = [s["prompt"] for s, x in zip(share, texts) for _ in x]
    rewards = iter(score(model, tokenizer, prompts, [y for x in texts for y in x], cfg.score_batch_size))
    records = []
    for s, a, other in zip(share, answers, others):
        reference = next(rewards)
        policy_rewards = [next(rewards) for _ in a]
        records.append({"prompt": s["prompt"], "pool_index": s["pool_index"], "reference": s["reference"],
                        "reference_reward": reference, "responses": a, "rewards": policy_rewards,
                        "candidates": [o | {"reward": next(rewards)} for o in other]})
    atomic_write_json(folder / "sampling.json", {"backend": backend_for(settings.backend), "seed": settings.seed,
                                                 "seconds": round(seconds, 1)})
    atomic_write_jsonl(folder / "samples.jsonl", records)  # last: its presence marks the step done


def _other_candidates(cfg: Config, t: int, share: list[dict], folder: Path) -> list[list[dict]]:
    """Per prompt, the candidates that are not the policy's: the reference answer, the endpoint's answers."""
    endpoint = _endpoint_answers(cfg, t, share, folder) if cfg.candidates.endpoint is not None else [[]] * len(share)
    reference = [[{"text": s["reference"], "origin": "reference"}] if cfg.candidates.reference else [] for s in share]
    return [r + [{"text": a, "origin": "endpoint"} for a in e] for r, e in zip(reference, endpoint)]


def _endpoint_answers(cfg: Config, t: int, share: list[dict], folder: Path) -> list[list[str]]:
    """endpoint_n answers per prompt from the OpenAI-compatible endpoint (the generators' client: retries, budget),
    `concurrency` requests in flight; written to endpoint.jsonl and read back on a resumed round."""
    import dataclasses
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from qilin.data.generators import _endpoint_chat

    path = folder / "endpoint.jsonl"
    if path.is_file():
        done = {r["prompt"]: r["answers"] for r in _read_jsonl(path)}
        if all(s["prompt"] in done for s in share):
            return [done[s["prompt"]] for s in share]
    g = dataclasses.replace(cfg.candidates.endpoint, kind="openai")
    chat = _endpoint_chat(g, cfg.sampling.seed + t, threading.Event())
    jobs = [[{"role": "user", "content": s["prompt"]}] for s in share for _ in range(cfg.candidates.endpoint_n)]
    try:
        with ThreadPoolExecutor(max(1, g.concurrency)) as pool:
            replies = list(pool.map(chat, jobs))
    finally:
        chat.close()
    n = cfg.candidates.endpoint_n
    answers = [[r.strip() for r in replies[i * n:(i + 1) * n]] for i in range(len(share))]
    atomic_write_jsonl(path, [{"prompt": s["prompt"], "answers": a} for s, a in zip(share, answers)])
    return answers


def _keep(samples: list[dict], k: int, beat_reference: bool) -> list[dict]:
    """The top-k answers of every prompt, over the policy's samples and the other candidates, as SFT
    conversations; empty answers never kept."""
    kept = []
    for s in samples:
        pooled = [(r, a, "policy") for r, a in zip(s["rewards"], s["responses"])]
        pooled += [(c["reward"], c["text"], c["origin"]) for c in s.get("candidates", [])]
        ranked = sorted((x for x in pooled if x[1].strip()), key=lambda x: -x[0])
        for r, a, origin in ranked[:k]:
            if beat_reference and r <= s["reference_reward"]:
                continue
            kept.append({"messages": [{"role": "user", "content": s["prompt"]},
                                      {"role": "assistant", "content": a}],
                         "reward": r, "origin": origin, "source": "rejection"})
    return kept


def _stats(cfg: Config, t: int, samples: list[dict], kept: list[dict]) -> dict:
    sampled = [r for s in samples for r in s["rewards"]]
    kept_r = [k["reward"] for k in kept]
    info = read_json(Path(cfg.out) / f"round{t}" / "sampling.json")
    return {
        "round": t, "rounds": cfg.rounds, "n": cfg.sampling.n, "k": cfg.keep, "prompts": len(samples),
        "kept": len(kept), "beat_reference": cfg.beat_reference, "fresh_prompts": cfg.fresh_prompts,
        "temperature": cfg.sampling.temperature, "top_p": cfg.sampling.top_p,
        "max_new_tokens": cfg.sampling.max_new_tokens, "sampling_backend": info["backend"],
        "sampling_seconds": info["seconds"],
        "reward.mean_sampled": statistics.fmean(sampled), "reward.std_sampled": _std(sampled),
        "reward.mean_kept": statistics.fmean(kept_r), "reward.std_kept": _std(kept_r),
        "reward.mean_reference": statistics.fmean(s["reference_reward"] for s in samples),
        "sampled.mean_chars": statistics.fmean(len(a) for s in samples for a in s["responses"]),
        "kept.mean_chars": statistics.fmean(len(k["messages"][1]["content"]) for k in kept),
        "candidates": sorted({"policy"} | {c["origin"] for s in samples for c in s.get("candidates", [])}),
        "kept.origins": {o: sum(k["origin"] == o for k in kept) for o in sorted({k["origin"] for k in kept})},
    }


def _check(cfg: Config) -> None:
    if cfg.reward_model is None:
        raise QilinError("rejection: reward_model is not set; put a reward stage before this one in the recipe, "
                         "or set reward_model=DIR")
    for name in ("rounds", "prompts", "keep"):
        if getattr(cfg, name) < 1:
            raise QilinError(f"rejection: {name} must be at least 1")
    per_prompt = cfg.sampling.n + cfg.candidates.reference + (cfg.candidates.endpoint_n if cfg.candidates.endpoint
                                                              else 0)
    if cfg.keep > per_prompt:
        raise QilinError(f"rejection: keep={cfg.keep} exceeds the {per_prompt} candidate answers per prompt")
    if cfg.candidates.endpoint is not None and not (cfg.candidates.endpoint.base_url and cfg.candidates.endpoint.model):
        raise QilinError("rejection: candidates.endpoint needs base_url and model")


def _finish_rounds(run: RunFolder, policy: Path) -> None:
    _link_model(run, policy)
    if (policy.parent / "eval" / "metrics.json").is_file():  # the last round's evaluation is the stage's own
        atomic_write_json(run.path / "eval" / "metrics.json", read_json(policy.parent / "eval" / "metrics.json"))


def _link_model(run: RunFolder, policy: Path) -> None:
    """`model/` -> the last round's model, so that later stages and the runner find it where they look."""
    link = run.model_dir
    if link.is_symlink():  # a link from an earlier, killed finish
        link.unlink()
    os.symlink(os.path.relpath(policy, run.path), link)


def _row_prefix(folder: Path) -> str:
    """The stage's name in the recipe (folder `NN-name`), which prefixes its per-round summary rows."""
    match = re.fullmatch(r"\d+-(.+)", folder.name)
    return match.group(1) if match else folder.name


def _std(xs: list[float]) -> float:
    return statistics.pstdev(xs) if len(xs) > 1 else 0.0


def _read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
