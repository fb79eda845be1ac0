"""Section `rejection` (declared by the rejection stage): per round N, K, T, sampling settings and the
reward of sampled and kept answers; whether the mean reward rises (paired bootstrap over the prompts
the rounds share); the plot of reward by round; ChiMed-GPT's published numbers."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo, Step, num, of_kind, rounds
from qilin.report.paired import bootstrap
from qilin.report.plots import save
from qilin.runs import iter_jsonl

# Published ChiMed-GPT figures (Ziya-13B-v2 after pre-training, SFT and rejection-sampling RLHF; project
# README), for orientation only: a 13B model, other data, and benchmarks this demo does not run except
# the dialogue metrics, which are on ChiMed QA rather than our held-out dialogues.
PUBLISHED_CHIMED = {"C-Eval": 68.29, "CMMLU": 52.92, "MedQA": 44.50, "ChiMed QA BLEU-1": 44.58,
                    "ChiMed QA ROUGE-1": 27.11}


def rejection(info: RunInfo) -> Fragment:
    out, plots = [], {}
    for s in of_kind(info, "rejection"):
        rows = rounds(s)
        if not rows:
            continue
        out += _table(s, rows) + _rises(s, rows)
        out += ["", "## Published ChiMed-GPT numbers, for orientation", "",
                "ChiMed-GPT (Ziya-13B-v2, full data; project README). Not comparable with a tiny model on demo data.",
                "", "| " + " | ".join(PUBLISHED_CHIMED) + " |", "|" + "---|" * len(PUBLISHED_CHIMED),
                "| " + " | ".join(str(v) for v in PUBLISHED_CHIMED.values()) + " |"]
        if not plots:
            plots["reward by rejection round"] = _reward_plot(info, rows)
    return Fragment(out, plots)


def _table(s: Step, rows: dict[str, dict]) -> list[str]:
    first = next(iter(rows.values()))
    out = ["", f"## Rejection sampling (`{s.name}`)", "",
           f"Each round samples N={first.get('n')} answers per prompt from the current policy (temperature "
           f"{first.get('temperature')}, top-p {first.get('top_p')}, at most {first.get('max_new_tokens')} new "
           f"tokens), keeps the top K={first.get('k')} by reward"
           + (" that beat the reference answer" if first.get("beat_reference") else "")
           + f" and fine-tunes on them with the SFT loss; T={first.get('rounds')} rounds, "
           + ("each on new prompts." if first.get("fresh_prompts") else "all on the same prompts, so that the "
              "rounds' means compare (a rise includes fitting those prompts).")
           + " Reward: mean ± standard deviation.", "",
           "| round | prompts | kept | sampled | kept | reference answer | sampled chars | kept chars |",
           "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        out.append(f"| {name} | {r.get('prompts')} | {r.get('kept')} | {_pm(r, 'sampled')} | {_pm(r, 'kept')} | "
                   f"{num(r.get('reward.mean_reference'))} | {num(r.get('sampled.mean_chars'), 0)} | "
                   f"{num(r.get('kept.mean_chars'), 0)} |")
    return out


def _rises(s: Step, rows: dict[str, dict]) -> list[str]:
    """holds only where every round's rise over the one before is outside chance (paired bootstrap of the
    mean reward of each prompt's samples, over the prompts both rounds sampled)."""
    means = [r.get("reward.mean_sampled") for r in rows.values()]
    if len(means) < 2 or None in means:
        return []
    per_round = [_prompt_means(s, r.get("round")) for r in rows.values()]
    tests = []
    for a, b in zip(per_round, per_round[1:]):
        shared = [p for p in a if p in b]
        tests.append(bootstrap([[a[p]] for p in shared], [[b[p]] for p in shared], lambda x, n: x[0] / n)
                     if shared else None)
    signs = [t.sign if t else 0 for t in tests]
    verdict = "holds" if all(x > 0 for x in signs) else ("DOES NOT HOLD" if any(x < 0 for x in signs) else "not shown")
    detail = "; ".join(f"round {i + 2} vs {i + 1}: " + (t.test.replace("items", "prompts") if t else
                                                          "no prompts in common to test")
                       for i, t in enumerate(tests))
    return ["", f"{verdict}: the mean reward of freshly sampled answers rises from round to round ("
            + " -> ".join(f"{v:.3f}" for v in means) + f"; {detail})."]


def _prompt_means(s: Step, t: int) -> dict[str, float]:
    """Mean reward of each prompt's sampled answers in round t (round<t>/samples.jsonl)."""
    path = s.path / f"round{t}" / "samples.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for _, r in iter_jsonl(path, "samples file"):
        if r.get("rewards"):
            out[r["prompt"]] = sum(r["rewards"]) / len(r["rewards"])
    return out


def _pm(row: dict, which: str) -> str:
    mean, std = row.get(f"reward.mean_{which}"), row.get(f"reward.std_{which}")
    return "–" if mean is None else f"{mean:.3f} ± {std or 0:.3f}"


def _reward_plot(info: RunInfo, rows: dict[str, dict]):
    """Mean reward of sampled and kept answers by rejection round, with one standard deviation."""
    import matplotlib.pyplot as plt

    rows = list(rows.values())
    numbers = [r.get("round") for r in rows]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for which in ("sampled", "kept"):
        ax.errorbar(numbers, [r[f"reward.mean_{which}"] for r in rows], yerr=[r[f"reward.std_{which}"] for r in rows],
                    marker="o", capsize=3, label=which)
    ax.set_xticks(numbers)
    ax.set_xlabel("rejection round", fontsize=8)
    ax.set_title("mean reward of sampled and kept answers", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, info.plot_dir / "reward_by_round.png")
