"""Pairwise comparison of two models' answers by a judge: `qilin eval compare --a DIR --b DIR --judge URL`.

HuatuoGPT-II's automatic evaluation compares two models' answers to the same questions with GPT-4 as
the judge and reports win / tie / loss. We follow that design with a prompt of our own (so the protocol
carries qilin's name, `pairwise-both-orders`): the judge sees the question, the reference answer and
the two answers and says which is better, [[A]], [[B]] or [[C]] (tie). Every pair is asked in BOTH
orders, so that a judge's preference for the first (or second) position cancels: a model wins a pair
when it wins in both orders, or wins in one and ties in the other; any disagreement between the orders
is a tie (MT-Bench's conservative rule). Win, tie and loss rates carry 95% Wilson intervals.

DIR is an evaluation folder (`qilin eval --out`, or a stage's eval/): the answers are read from its
predictions/<task>.jsonl (the free-text tasks, dialogue and CMB-Clin), paired by item id, so nothing is
generated again and both models are compared on exactly the answers their scores came from.
"""

from __future__ import annotations

import re
from pathlib import Path

from qilin.errors import QilinError
from qilin.eval import metrics as M
from qilin.eval.judge import _post
from qilin.runs import atomic_write_json, atomic_write_jsonl, iter_jsonl

PROTOCOL = "pairwise-both-orders"
TEXT_TASKS = ("dialogue", "cmb-clin")
PROMPT = """请作为公正的医学评审，比较两个AI助手对同一个用户问题的回答，判断哪一个更好。
请考虑医学上的正确性、与问题的相关性、完整性和有用性；不要因为回答的先后顺序或长短而偏向任何一方。

[用户问题]
{question}

[参考答案]
{reference}

[助手A的回答]
{a}

[助手B的回答]
{b}

先简要说明理由，最后一行只输出结论：[[A]] 表示A更好，[[B]] 表示B更好，[[C]] 表示两者相当。"""
VERDICT = re.compile(r"\[\[([ABC])\]\]")
CHAT_MARKS = re.compile(r"<\|im_start\|>(\w+)\n|<\|im_end\|>\n?")


def answers(eval_dir: Path, task: str) -> dict[str, dict]:
    """{id: prediction line} of one task's first free-text protocol in an evaluation folder."""
    path = eval_dir / "predictions" / f"{task}.jsonl"
    if not path.is_file():
        raise QilinError(f"{eval_dir}: no {path.relative_to(eval_dir)} (run `qilin eval --tasks {task}` there first)")
    lines = [r for _, r in iter_jsonl(path, "predictions file")]
    first = lines[0]["protocol"] if lines else None
    return {x["id"]: x for x in lines if x["protocol"] == first}


def question_text(prompt: str) -> str:
    """The conversation of a chat-rendered prompt, readable: `user: ...` / `assistant: ...` lines."""
    text = CHAT_MARKS.sub(lambda m: f"\n{m.group(1)}: " if m.group(1) else "\n", prompt)
    return "\n".join(ln for ln in text.splitlines() if ln.strip() and ln.strip() not in ("assistant:",)).strip()


def verdict(reply: str) -> str | None:
    """The LAST [[A]] / [[B]] / [[C]] of a judge reply (its reasoning may quote the format first)."""
    found = VERDICT.findall(reply)
    return found[-1] if found else None


def combine(first: str | None, second: str | None) -> str | None:
    """Outcome for model A from the verdicts of (A shown first) and (B shown first): win, tie or loss;
    None when either reply had no verdict."""
    if first is None or second is None:
        return None
    a1 = {"A": 1, "B": -1, "C": 0}[first]
    a2 = {"A": -1, "B": 1, "C": 0}[second]  # in the swapped order, A's answer is shown as B
    total = a1 + a2
    if a1 and a2 and a1 != a2:  # the orders disagree: position, not quality, decided
        return "tie"
    return "win" if total > 0 else "loss" if total < 0 else "tie"


def compare(a_dir: Path, b_dir: Path, url: str, model: str, tasks: list[str], out: Path,
            limit: int | None = None, timeout: float = 60.0) -> dict:
    """Judge every item both models answered; write OUT/compare.json and OUT/judgments.jsonl."""
    endpoint = url.rstrip("/")
    endpoint += "" if endpoint.endswith("/chat/completions") else "/chat/completions"
    pairs = []
    for task in tasks:
        a, b = answers(a_dir, task), answers(b_dir, task)
        common = [i for i in a if i in b][:limit]
        if not common:
            raise QilinError(f"compare {task}: {a_dir} and {b_dir} answered no item in common")
        pairs += [(task, i, a[i], b[i]) for i in common]
    judged = []
    for task, i, x, y in pairs:
        q, ref = question_text(x["prompt"]), x.get("reference", "")
        r1 = _post(endpoint, model, PROMPT.format(question=q, reference=ref, a=x["prediction"], b=y["prediction"]),
                   timeout)
        r2 = _post(endpoint, model, PROMPT.format(question=q, reference=ref, a=y["prediction"], b=x["prediction"]),
                   timeout)
        v1, v2 = verdict(r1), verdict(r2)
        judged.append({"task": task, "id": i, "question": q, "a": x["prediction"], "b": y["prediction"],
                       "verdict_a_first": v1, "verdict_b_first": v2, "outcome": combine(v1, v2),
                       "reply_a_first": r1, "reply_b_first": r2})
    result = {"protocol": PROTOCOL, "a": str(a_dir), "b": str(b_dir), "judge": {"url": url, "model": model,
              "temperature": 0}, "prompt": PROMPT, "tasks": {t: summary([j for j in judged if j["task"] == t])
                                                          for t in tasks}, "all": summary(judged)}
    atomic_write_jsonl(out / "judgments.jsonl", judged)
    atomic_write_json(out / "compare.json", result)
    return result


def summary(judged: list[dict]) -> dict:
    """Win / tie / loss of model A over the judged pairs (unparsed ones counted apart), 95% Wilson intervals."""
    done = [j["outcome"] for j in judged if j["outcome"] is not None]
    n = len(done)
    out = {"n": n, "unparsed": len(judged) - n}
    for k in ("win", "tie", "loss"):
        c = done.count(k)
        out[k] = {"value": c / n if n else None, "count": c, "ci95": list(M.binomial_ci(c, n))}
    return out


def format_summary(result: dict) -> str:
    lines = [f"{PROTOCOL}: A = {result['a']}, B = {result['b']}, judge {result['judge']['model']} at "
             f"{result['judge']['url']}; both orders asked, a disagreement between them is a tie"]
    for name, s in [*result["tasks"].items(), ("all", result["all"])]:
        cells = ", ".join(f"{k} {s[k]['value']:.3f} [{s[k]['ci95'][0]:.3f}, {s[k]['ci95'][1]:.3f}]"
                          if s[k]["value"] is not None else f"{k} n/a" for k in ("win", "tie", "loss"))
        lines.append(f"  {name:<10} A vs B: {cells}  (n={s['n']}, unparsed {s['unparsed']})")
    return "\n".join(lines)
