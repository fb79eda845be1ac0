"""Section `reward` (declared by the reward stage): held-out pairwise accuracy of each reward model,
beside the length-only baseline and chance, each difference with an exact sign test on the same pairs.
Read from the stage's own held_out/ folder (qilin.train.reward.HELD_OUT)."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo, of_kind
from qilin.report.paired import binomial_p, sign_test
from qilin.runs import iter_jsonl, read_json

HELD_OUT = "held_out"  # qilin.train.reward.HELD_OUT


def reward(info: RunInfo) -> Fragment:
    out = []
    for s in of_kind(info, "reward"):
        folder = s.path / HELD_OUT
        if not (folder / "metrics.json").is_file():
            continue
        ev = read_json(folder / "metrics.json")
        m, ci, n = ev["metrics"], ev.get("ci95", {}), ev.get("n", {}).get("reward.accuracy")
        out += ["", f"## Reward model (`{s.name}`)", "",
                f"Pairwise accuracy on {n} held-out preference pairs (the reward of the chosen answer exceeds "
                "the rejected one's), beside a baseline that always prefers the longer answer:", "",
                "| model | accuracy % | 95% interval |", "|---|---|---|"]
        for label, key in (("reward model", "reward.accuracy"),
                           ("longer answer wins", "reward.length_baseline_accuracy")):
            if m.get(key) is not None:
                lo, hi = ci.get(key, (None, None))
                interval = f"{lo * 100:.0f}–{hi * 100:.0f}" if lo is not None else "–"
                out.append(f"| {label} | {m[key] * 100:.1f} | {interval} |")
        out += ["", *claims(folder / "predictions" / "reward.jsonl")]
        out += ["", "Protocol: " + ev.get("protocols", {}).get("reward.accuracy", "–")]
    return Fragment(out)


def claims(predictions) -> list[str]:
    """Does the reward model beat chance (exact sign test of wins against losses) and the length baseline
    (McNemar exact on the same pairs)? Said only where the test shows it."""
    if not predictions.is_file():
        return ["(no per-item predictions: the reward model's accuracy is not tested against chance or length)"]
    rows = [r for _, r in iter_jsonl(predictions, "predictions file")]
    correct = [float(r["correct"]) for r in rows]
    wins, losses = sum(c == 1 for c in correct), sum(c == 0 for c in correct)
    p = binomial_p(wins, wins + losses)
    above = p < 0.05 and wins > losses
    length = sign_test([float(r["length_correct"]) for r in rows], correct)
    return [f"- {'beats' if above else 'not shown to beat'} chance (50%): exact sign test p = {p:.3g}, "
            f"{wins} pairs right, {losses} wrong, {len(rows) - wins - losses} ties",
            f"- {_verdict(length.sign)} the length-only baseline: {length.test}"]


def _verdict(sign: int) -> str:
    return {1: "beats", -1: "trails", 0: "not shown to beat"}[sign]
