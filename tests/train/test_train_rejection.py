"""The rejection stage on the micro model: rounds, kept data, per-round rows, resume without redoing a
finished round; the one sampling interface; the shipped real-model profiles."""

import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from chat_endpoint import chat_endpoint

from qilin.config import build
from qilin.errors import QilinError
from qilin.model import generate
from qilin.runs import read_json
from qilin.train import rejection, reward

ROOT = Path(__file__).resolve().parents[2]
SAMPLING = {"n": 3, "max_new_tokens": 6, "batch_size": 12, "temperature": 1.0, "top_p": 0.9}
TRAIN = {"batch_size": 4, "max_length": 64, "logging_steps": 1, "save_steps": 1, "warmup_ratio": 0.0,
         "lr": 1e-3, "max_steps": 2}


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, micro_model_dir):
    """An untrained reward model: a seeded random head on the micro model (the plumbing is under test)."""
    from qilin.model.load import save_model

    model, tok = reward.load_reward_model(micro_model_dir, seed=1, new_head=True)
    return save_model(model, tok, tmp_path_factory.mktemp("rm") / "model")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from micro_data import DISEASES, write_jsonl

    return write_jsonl(tmp_path_factory.mktemp("pool") / "sft.jsonl", [
        {"messages": [{"role": "user", "content": f"{d}有什么症状？"}, {"role": "assistant", "content": f"{d}常见发热。"}]}
        for d in DISEASES])


class Killed(Exception):
    pass


def config(out, policy, reward_model, data, **extra):
    return build(rejection.Config, {"out": out, "model": policy, "reward_model": reward_model, "data": data,
                                    "rounds": 2, "prompts": 4, "keep": 1, "sampling": SAMPLING, "train": TRAIN,
                                    **extra})


def test_rounds_keep_the_best_answers_and_write_a_row_each(tmp_path, micro_model_dir, reward_dir, pool):
    out = rejection.run(config(tmp_path / "03-rejection", micro_model_dir, reward_dir, pool))
    rows = read_json(out / "eval" / "rows.json")
    assert list(rows) == ["rejection.round1", "rejection.round2"]
    for t, row in enumerate(rows.values(), 1):
        assert (row["round"], row["rounds"], row["n"], row["k"], row["prompts"], row["kept"]) == (t, 2, 3, 1, 4, 4)
        assert row["temperature"] == 1.0 and row["top_p"] == 0.9
        for key in ("reward.mean_sampled", "reward.std_sampled", "reward.mean_kept", "reward.std_kept"):
            assert isinstance(row[key], float), key
        assert row["reward.mean_kept"] >= row["reward.mean_sampled"]
        samples = [json.loads(x) for x in (out / f"round{t}" / "samples.jsonl").read_text().splitlines()]
        kept = [json.loads(x) for x in (out / f"round{t}" / "kept.jsonl").read_text().splitlines()]
        assert [len(s["responses"]) for s in samples] == [3] * 4
        assert [k["reward"] for k in kept] == [max(s["rewards"]) for s in samples]
        assert [k["messages"][0]["content"] for k in kept] == [s["prompt"] for s in samples]
    prompts = [{json.loads(x)["prompt"] for x in (out / f"round{t}" / "samples.jsonl").read_text().splitlines()}
               for t in (1, 2)]
    assert prompts[0] == prompts[1]  # every round samples the same prompts: comparable mean rewards
    # round 2 starts from round 1's model; the stage's model is the last round's
    assert read_json(out / "round2" / "manifest.json")["inputs"]["model"]["path"] == str(out / "round1" / "model")
    assert (out / "model").resolve() == (out / "round2" / "model").resolve()
    assert (out / "model" / ".complete").is_file() and (out / "manifest.json").is_file()


def test_killed_mid_round_resumes_without_redoing_finished_rounds(tmp_path, micro_model_dir, reward_dir, pool,
                                                                  monkeypatch):
    cfg = config(tmp_path / "05-rejection", micro_model_dir, reward_dir, pool)
    real, calls = generate.sample, []

    def sample_then_die(*args, **kwargs):  # the process dies while sampling round 2
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "sample", sample_then_die)
    with pytest.raises(Killed):
        rejection.run(cfg)
    round1 = {p: p.stat().st_mtime_ns for p in (tmp_path / "05-rejection" / "round1").rglob("*") if p.is_file()}
    assert (tmp_path / "05-rejection" / "round1" / "manifest.json") in round1
    assert not (tmp_path / "05-rejection" / "round2").exists() and not (tmp_path / "05-rejection" / "manifest.json").exists()

    rejection.run(cfg)
    assert len(calls) == 3  # round 2 sampled once more; round 1 never again
    assert {p: p.stat().st_mtime_ns for p in round1} == round1
    assert list(read_json(tmp_path / "05-rejection" / "eval" / "rows.json")) == ["rejection.round1", "rejection.round2"]


def test_beat_reference_keeps_only_answers_above_the_reference():
    samples = [{"prompt": "p", "reference_reward": 0.5, "responses": ["a", "b", ""], "rewards": [0.2, 0.7, 9.0]},
               {"prompt": "q", "reference_reward": 0.5, "responses": ["c", "d", "e"], "rewards": [0.1, 0.3, 0.4]}]
    assert [k["messages"][1]["content"] for k in rejection._keep(samples, 2, False)] == ["b", "a", "e", "d"]
    assert [k["messages"][1]["content"] for k in rejection._keep(samples, 2, True)] == ["b"]  # empty answer never kept


def test_missing_reward_model_is_a_one_line_error(tmp_path, micro_model_dir, pool):
    with pytest.raises(QilinError, match="reward_model is not set"):
        rejection.run(config(tmp_path / "x", micro_model_dir, None, pool))


def test_sampling_uses_vllm_when_installed(monkeypatch, micro_model_dir):
    """The vLLM path, with a stand-in module: same prompts (chat template), stop tokens and settings."""
    seen = {}

    class LLM:
        def __init__(self, model, seed, dtype):
            seen["model"] = model

        def generate(self, prompts, params):
            seen["prompts"], seen["params"] = prompts, params
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{i}-{j}") for j in range(params.n)])
                    for i, _ in enumerate(prompts)]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(generate.importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    monkeypatch.setattr(generate, "_has_cuda", lambda: True)
    assert generate.backend_for("auto") == "vllm"
    out = generate.sample(micro_model_dir, ["头痛怎么办？", "发热？"], generate.Sampling(n=2, top_p=0.8))
    assert out == [["0-0", "0-1"], ["1-0", "1-1"]]
    assert seen["prompts"][0] == "<|im_start|>user\n头痛怎么办？<|im_end|>\n<|im_start|>assistant\n"
    assert seen["params"].top_p == 0.8 and seen["params"].stop_token_ids


def test_sampling_falls_back_to_transformers(monkeypatch, micro_model_dir):
    monkeypatch.setattr(generate.importlib.util, "find_spec", lambda name: None)
    assert generate.backend_for("auto") == "transformers"
    with pytest.raises(QilinError, match="vllm is not installed"):
        generate.backend_for("vllm")
    settings = generate.Sampling(n=3, max_new_tokens=5, seed=7)
    first = generate.sample(micro_model_dir, ["头痛怎么办？", "发热？"], settings)
    assert [len(a) for a in first] == [3, 3]
    assert generate.sample(micro_model_dir, ["头痛怎么办？", "发热？"], settings) == first  # seeded


def test_shipped_gpu_profiles_are_consistent():
    """recipes/chimed-gpt-7b.yaml names a DeepSpeed profile that exists; every profile is valid accelerate YAML."""
    text = (ROOT / "recipes" / "chimed-gpt-7b.yaml").read_text(encoding="utf-8")
    named = {line.split("configs/accelerate/")[1].split()[0] for line in text.splitlines()
             if "configs/accelerate/" in line}
    profiles = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
    assert named and named <= {p.name for p in profiles}
    for path in profiles:
        profile = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert profile["distributed_type"] in ("DEEPSPEED", "FSDP"), path
        if profile["distributed_type"] == "DEEPSPEED":
            assert profile["deepspeed_config"]["zero_stage"] in (2, 3), path
        else:  # configs/accelerate/fsdp.yaml
            assert profile["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT", path
    recipe = yaml.safe_load(text)
    stages = {s["stage"]: s for s in recipe["stages"]}
    assert stages["sft"]["train"]["max_length"] == 4096 and stages["reward"]["train"]["lora"]["enabled"]


def test_recipe_hands_the_reward_model_and_evaluation_to_rejection(tmp_path):
    from qilin.recipe import load_recipe, plan

    steps = {n: c for n, _, c in plan(load_recipe(ROOT / "recipes" / "chimed-gpt.yaml", [f"out={tmp_path}"]))}
    assert list(steps) == ["data", "base", "cpt", "sft", "reward", "rejection"]
    assert steps["reward"].model == steps["rejection"].model == tmp_path / "03-sft" / "model"  # the policy
    assert steps["rejection"].reward_model == tmp_path / "04-reward" / "model"
    assert steps["rejection"].eval_data == tmp_path / "00-data"
    assert steps["rejection"].eval.max_new_tokens["dialogue"] == 96  # the recipe's evaluation, not the default
    assert steps["sft"].train.max_length == steps["rejection"].train.max_length == 256  # one context value


def test_report_shows_reward_and_round_rows(tmp_path):
    """The report from run folders alone: reward accuracy beside the length baseline, one row per round."""
    from qilin.recipe import write_summary
    from qilin.report import write_report
    from qilin.runs import atomic_write_json

    run = tmp_path / "r"
    atomic_write_json(run / "recipe.json", {"name": "chimed-gpt", "seed": 1,
                                            "steps": [["sft", "03-sft", "sft"], ["reward", "04-reward", "reward"],
                                                      ["rejection", "05-rejection", "rejection"]]})
    bench = {"cmexam.accuracy": 0.2, "dialogue.bleu1": 3.0, "dialogue.rouge1": 5.0, "ppl.medical": 90.0}
    atomic_write_json(run / "03-sft" / "eval" / "metrics.json", {"metrics": bench})
    atomic_write_json(run / "04-reward" / "held_out" / "metrics.json", {
        "metrics": {"reward.accuracy": 0.6, "reward.length_baseline_accuracy": 0.475},
        "n": {"reward.accuracy": 80}, "ci95": {"reward.accuracy": [0.49, 0.7]}})
    rows = {}
    for t, (mean, kept) in enumerate([(-0.2, 0.3), (0.1, 0.5)], 1):
        rows[f"rejection.round{t}"] = {"round": t, "rounds": 2, "n": 4, "k": 1, "prompts": 48, "kept": 48,
                                       "temperature": 0.9, "top_p": 0.9, "reward.mean_sampled": mean,
                                       "reward.std_sampled": 0.4, "reward.mean_kept": kept, "reward.std_kept": 0.2,
                                       **bench}
        atomic_write_json(run / "05-rejection" / f"round{t}" / "eval" / "metrics.json", {"metrics": bench})
    atomic_write_json(run / "05-rejection" / "eval" / "rows.json", rows)
    atomic_write_json(run / "05-rejection" / "eval" / "metrics.json", {"metrics": bench})
    summary = read_json(write_summary(run))
    assert "reward" not in summary  # a reward model's numbers are in its own held_out/, not a benchmark row
    assert summary["rejection.round2"]["reward.mean_sampled"] == 0.1 and "cmexam.accuracy" in summary["rejection.round1"]
    report = (write_report(run) / "report.md").read_text(encoding="utf-8")
    assert "| rejection.round1 |" in report and "| rejection.round2 |" in report and "| reward |" not in report
    assert "| reward model | 60.0 | 49–70 |" in report and "| longer answer wins | 47.5 |" in report
    # no samples.jsonl here: the rise cannot be tested on the prompts, so it is not claimed
    assert "not shown: the mean reward of freshly sampled answers rises" in report and "-0.200 -> 0.100" in report
    assert "68.29" in report and "44.58" in report  # published ChiMed-GPT numbers
    assert (run / "plots" / "reward_by_round.png").stat().st_size > 1000


def test_reference_and_endpoint_answers_are_ranked_with_the_samples(tmp_path, micro_model_dir, reward_dir, pool):
    """Candidates from other sources: the pool's reference and a (fake, local) OpenAI-compatible endpoint
    that answers "<disease>需要及时就医。"."""
    def reply(body):
        return body["messages"][-1]["content"].replace("有什么症状？", "需要及时就医。")

    with chat_endpoint(reply) as (url, seen):
        endpoint = {"kind": "openai", "base_url": url, "model": "fake", "concurrency": 4}
        cfg = config(tmp_path / "03-rejection", micro_model_dir, reward_dir, pool, rounds=1, keep=5,
                     candidates={"reference": True, "endpoint": endpoint, "endpoint_n": 1})
        out = rejection.run(cfg)
    samples = [json.loads(line) for line in (out / "round1" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and len(seen) == 4  # one request per prompt
    for s in samples:
        origins = [c["origin"] for c in s["candidates"]]
        assert origins == ["reference", "endpoint"] and s["candidates"][0]["text"] == s["reference"]
        assert s["candidates"][0]["reward"] == pytest.approx(s["reference_reward"], abs=1e-5)
        assert s["candidates"][1]["text"] == s["prompt"].replace("有什么症状？", "需要及时就医。")
    kept = [json.loads(line) for line in (out / "round1" / "kept.jsonl").read_text().splitlines()]
    # keep 5 of 3 samples + reference + endpoint answer: every non-empty candidate, best first
    assert {k["origin"] for k in kept} == {"policy", "reference", "endpoint"}
    stats = read_json(out / "round1" / "stats.json")
    assert stats["candidates"] == ["endpoint", "policy", "reference"]
    assert stats["kept.origins"]["reference"] == 4 and stats["kept.origins"]["endpoint"] == 4
    # a resumed round reads the endpoint's answers back instead of asking again
    assert (out / "round1" / "endpoint.jsonl").is_file()


def test_keep_ranks_other_candidates_with_the_policy_samples():
    samples = [{"prompt": "p", "reference_reward": 0.5, "responses": ["a", "b"], "rewards": [0.2, 0.7],
                "candidates": [{"text": "ref", "origin": "reference", "reward": 0.5},
                               {"text": "gpt", "origin": "endpoint", "reward": 0.9}]}]
    kept = rejection._keep(samples, 2, False)
    assert [(k["messages"][1]["content"], k["origin"]) for k in kept] == [("gpt", "endpoint"), ("b", "policy")]
    assert [k["origin"] for k in rejection._keep(samples, 4, True)] == ["endpoint", "policy"]  # > reference only
