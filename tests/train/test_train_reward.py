"""The reward stage on the micro model: pairs and ranked lists, held-out accuracy beside the length
baseline, scoring through the CLI, and one-line errors for malformed reward files."""

import json
import subprocess
import sys

import pytest

from qilin.config import build
from qilin.errors import InputError
from qilin.runs import read_json
from qilin.train import reward

from micro_data import DISEASES, write_jsonl

FAST = {"batch_size": 8, "logging_steps": 2, "save_steps": 1000, "warmup_ratio": 0.0, "max_length": 64}
GOOD, BAD = "应当及时就医，按时服药。", "不用管它，天天熬夜喝酒。"  # same length: only the content tells them apart


def pairs(diseases):
    # The rejected answer is the LONGER one in half the pairs, so length alone scores 0.5.
    return [{"prompt": f"{d}怎么办？", "chosen": GOOD + ("。" if i % 2 else ""),
             "rejected": BAD + ("" if i % 2 else "。"), "source": "test"} for i, d in enumerate(diseases)]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, micro_model_dir):
    tmp = tmp_path_factory.mktemp("reward")
    train = write_jsonl(tmp / "train.jsonl", pairs(DISEASES[:8]) + [
        {"prompt": "头痛怎么办？", "responses": [GOOD, "多喝水。", BAD]}])  # a ranked list: 3 pairs
    held = write_jsonl(tmp / "held.jsonl", pairs(DISEASES[8:] + DISEASES[:2]))
    cfg = build(reward.Config, {"out": tmp / "run", "model": micro_model_dir, "data": train, "held_out": held,
                                "train": {**FAST, "lr": 3e-3, "max_steps": 12}})
    return reward.run(cfg), held


def test_reward_model_learns_beyond_length(reward_run):
    out, _ = reward_run
    metrics = read_json(out / reward.HELD_OUT / "metrics.json")["metrics"]
    assert metrics["reward.length_baseline_accuracy"] == 0.5
    assert metrics["reward.accuracy"] == 1.0 and metrics["reward.margin_mean"] > 0
    train = read_json(out / "metrics.json")
    assert train["train.steps"] == 12 and train["train.reward_accuracy"] is not None
    config = read_json(out / "model" / "config.json")
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and config["pad_token_id"] is not None
    assert (out / "manifest.json").is_file() and not (out / "checkpoints").exists()
    assert len(read_json(out / reward.HELD_OUT / "metrics.json")["protocols"]) == 2


def test_ranked_list_gives_every_ordered_pair(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": ["a", "b", "c"]}])
    got = [(p["chosen"], p["rejected"]) for p in reward.read_preferences(f)]
    assert got == [("a", "b"), ("a", "c"), ("b", "c")]


def test_score_is_independent_of_batching(reward_run):
    out, _ = reward_run
    model, tok = reward.load_reward_model(out / "model")
    prompts, answers = ["感冒怎么办？"] * 3 + ["头痛？"], [GOOD, BAD, "多休息", GOOD * 3]
    one = [reward.score(model, tok, [p], [a])[0] for p, a in zip(prompts, answers)]
    assert reward.score(model, tok, prompts, answers, batch_size=4) == pytest.approx(one, abs=1e-4)


def test_cli_scores_a_file(reward_run, tmp_path, capsys):
    from qilin.cli import main

    out, held = reward_run
    f = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "感冒怎么办？", "response": GOOD},
                                          {"prompt": "感冒怎么办？", "response": BAD}])
    assert main(["reward-score", "--model", str(out / "model"), str(f)]) == 0
    good, bad = (json.loads(line)["reward"] for line in capsys.readouterr().out.splitlines())
    assert good > bad
    assert main(["reward-score", "--model", str(out / "model"), str(held), "--out", str(tmp_path / "o.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["reward_chosen"] > r["reward_rejected"] for r in scored)  # the held-out pairs, as in eval


@pytest.mark.parametrize("record, field, words", [
    ({"prompt": "p", "chosen": "a"}, "rejected", "missing answer"),
    ({"prompt": "p", "chosen": "a", "rejected": ""}, "rejected", "non-empty"),
    ({"prompt": "p", "responses": ["only one"]}, "responses", "list of 1 answer gives no pair"),
    ({"question": "p", "chosen": "a", "rejected": "b"}, "prompt", "rename it to 'prompt'"),
    ({"prompt": [{"role": "user", "content": "p"}], "chosen": "a", "rejected": "b"}, "prompt", "string"),
])
def test_bad_reward_records_name_file_line_and_field(tmp_path, record, field, words):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(InputError, match=words) as e:
        reward.read_preferences(f)
    assert (e.value.line, e.value.field) == (2, field) and str(e.value).startswith(f"{f}:2: field '{field}'")


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["only one"]}])
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "reward", f"data={f}", "model=/nonexistent",
                           f"out={tmp_path / 'o'}"], capture_output=True, text=True)
    assert proc.returncode == 2 and f"{f}:1" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "reward-score", "--model", "/nonexistent",
                           str(write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "answer": "x"}]))],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "s.jsonl:1: field 'response'" in proc.stderr and "Traceback" not in proc.stderr


def test_lora_reward_model_is_merged_with_its_trained_head(tmp_path, micro_model_dir):
    f = write_jsonl(tmp_path / "p.jsonl", pairs(DISEASES[:8]))
    out = reward.run(build(reward.Config, {"out": tmp_path / "run", "model": micro_model_dir, "data": f, "held_out": f,
                                           "train": {**FAST, "lr": 1e-2, "max_steps": 8, "batch_size": 4,
                                                     "lora": {"enabled": True, "r": 4}}}))
    assert not (out / "model" / "adapter_config.json").exists()
    assert read_json(out / reward.HELD_OUT / "metrics.json")["metrics"]["reward.accuracy"] == 1.0  # head and adapter kept
