"""Sections `reward` and `rejection` on fixture run folders (what the reward and rejection stages write)."""

from report_fixtures import write_run

from qilin.report import SECTIONS
from qilin.report.folders import collect
from qilin.runs import atomic_write_json, atomic_write_jsonl


def reward_run(root, correct, length_correct):
    write_run(root, "chimed", [{"name": "data", "kind": "data"}, {"name": "reward", "kind": "reward"}])
    n = len(correct)
    acc = sum(correct) / n
    atomic_write_json(root / "01-reward" / "held_out" / "metrics.json", {
        "metrics": {"reward.accuracy": acc, "reward.length_baseline_accuracy": sum(length_correct) / n},
        "protocols": {"reward.accuracy": "held-out pairs: reward(chosen) > reward(rejected)"},
        "n": {"reward.accuracy": n}, "ci95": {"reward.accuracy": [0.4, 0.9]}})
    atomic_write_jsonl(root / "01-reward" / "held_out" / "predictions" / "reward.jsonl", [
        {"line": i, "correct": c, "length_correct": x} for i, (c, x) in enumerate(zip(correct, length_correct))])
    return collect(root)


def test_reward_beats_chance_and_length_only_when_the_sign_test_shows_it(tmp_path):
    small = SECTIONS["reward"](reward_run(tmp_path / "a", [1, 1, 1, 0, 1, 0], [1, 0, 1, 0, 1, 1])).lines
    text = "\n".join(small)
    assert "## Reward model (`reward`)" in text and "| reward model | 66.7 | 40–90 |" in text
    assert "- not shown to beat chance (50%): exact sign test p = 0.688, 4 pairs right, 2 wrong, 0 ties" in small
    assert any(x.startswith("- not shown to beat the length-only baseline: McNemar exact p = ") for x in small)
    assert "Protocol: held-out pairs" in text
    large = SECTIONS["reward"](reward_run(tmp_path / "b", [1] * 30, [1, 0] * 15)).lines
    assert any(x.startswith("- beats chance (50%): exact sign test p = ") for x in large)
    assert any(x.startswith("- beats the length-only baseline: McNemar exact p = ") for x in large)


def rejection_run(root, rise):
    rows = {}
    steps = [{"name": "data", "kind": "data"},
             {"name": "rejection", "kind": "rejection", "metrics": {"ppl.medical": 3.0}}]
    write_run(root, "chimed", steps)
    prompts = [f"p{i}" for i in range(30)]
    for t in (1, 2):
        rewards = [[0.1 * (i % 5) + rise * (t - 1) + 0.01 * k for k in range(3)] for i in range(30)]
        atomic_write_jsonl(root / "01-rejection" / f"round{t}" / "samples.jsonl",
                           [{"prompt": p, "responses": ["a", "b", "c"], "rewards": r} for p, r in zip(prompts, rewards)])
        mean = sum(sum(r) for r in rewards) / 90
        rows[f"rejection.round{t}"] = {"round": t, "rounds": 2, "n": 3, "k": 1, "prompts": 30, "kept": 30,
                                       "temperature": 0.9, "top_p": 0.9, "max_new_tokens": 8,
                                       "reward.mean_sampled": mean, "reward.std_sampled": 0.15,
                                       "reward.mean_kept": mean + 0.02, "reward.std_kept": 0.1}
    atomic_write_json(root / "01-rejection" / "eval" / "rows.json", rows)
    return collect(root)


def test_rejection_rise_holds_only_when_the_paired_bootstrap_shows_it(tmp_path):
    part = SECTIONS["rejection"](rejection_run(tmp_path / "a", 0.05))
    claim = next(x for x in part.lines if "rises from round to round" in x)
    assert claim.startswith("holds:") and "round 2 vs 1: paired bootstrap over 30 prompts" in claim
    assert part.plots["reward by rejection round"].stat().st_size > 1000
    assert "| rejection.round1 | 30 | 30 |" in "\n".join(part.lines)
    flat = SECTIONS["rejection"](rejection_run(tmp_path / "b", 0.0))
    assert next(x for x in flat.lines if "rises from round" in x).startswith("not shown:")
    down = SECTIONS["rejection"](rejection_run(tmp_path / "c", -0.05))
    assert next(x for x in down.lines if "rises from round" in x).startswith("DOES NOT HOLD:")
