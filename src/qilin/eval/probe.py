"""The `probe` task: did training put facts into the model? (probes built by qilin.data.probes)

Each probe is a cloze prompt, its target span and options (the target + objects of the same
relation). One forward pass per (probe, option) gives the option's summed log-probability after the
prompt, on the raw text (no chat template: the facts were trained as raw text). From those:

- the **cloze** score: the target span's log-probability (summed over its tokens), LAMA-style;
- the **multiple-choice** verdict: the fact counts as known when the correct option has the highest
  log-probability of all options (Ovadia et al., EMNLP 2024, score facts this way); ties count wrong.

Metrics per set (seen / paraphrase / unseen, see qilin.data.probes): accuracy with a 95% Wilson
interval (`probe.seen`), the mean target log-prob with a 95% normal interval (`probe.seen_logprob`), the
chance level (mean 1 / options), and accuracy per kind of fact (`probe.seen.fictional`, `probe.seen.kg`).
"""

from __future__ import annotations

import math

from qilin.eval import metrics as M
from qilin.eval.choice import accuracy

PROTOCOL = "option-logprob"
EXTRACTION = ("the option with the highest SUMMED log-prob of its tokens after the cloze prompt (raw text, no "
              "chat template; prompt and option tokenised separately); ties wrong")
METRIC = ("per set (seen / paraphrase / unseen): share of probes whose correct option is the most probable, "
          "95% Wilson interval; mean log-prob of the target span (cloze), 95% normal interval; qilin's own protocol")
PROMPT = "{cloze prompt}{option} as raw text; one option per forward pass"


def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """One prediction line per probe: every option's log-prob and token count, the verdict."""
    pairs = [(r, k) for r in rows for k in sorted(r["options"])]
    scores = lm.sequence_logprob([r["prompt"] for r, _ in pairs], [r["options"][k] for r, k in pairs],
                                 cfg.batch_size)
    by: dict[str, dict] = {}
    for (r, k), (lp, n) in zip(pairs, scores):
        by.setdefault(r["id"], {})[k] = (lp, n)
    lines = []
    for r in rows:
        own = by[r["id"]]
        best = max(v[0] for v in own.values())
        winners = [k for k, v in own.items() if v[0] == best]
        pred = winners[0] if len(winners) == 1 else ""
        lines.append({"task": task, "protocol": PROTOCOL, "id": r["id"], "set": r["set"], "kind": r["kind"],
                      "relation": r["relation"], "prompt": r["prompt"], "target": r["target"],
                      "options": r["options"], "reference": r["answer"], "prediction": pred,
                      "correct": pred == r["answer"], "n_options": len(r["options"]),
                      "logprobs": {k: v[0] for k, v in own.items()}, "tokens": {k: v[1] for k, v in own.items()},
                      "target_logprob": own[r["answer"]][0], "target_tokens": own[r["answer"]][1]})
    return lines


def mean_ci(values: list[float]) -> dict:
    """Mean with a 95% normal-approximation interval (t-free: the sets hold a hundred or more probes)."""
    n = len(values)
    if not n:
        return {"value": None, "n": 0}
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"value": m, "n": n, "ci95": [m - half, m + half]}


def score(lines: list[dict]) -> dict:
    """Accuracy, mean target log-prob and chance per set; accuracy per set and kind."""
    out = {}
    for s in dict.fromkeys(x["set"] for x in lines):
        mine = [x for x in lines if x["set"] == s]
        out[s] = accuracy(mine)
        out[f"{s}_logprob"] = mean_ci([x["target_logprob"] for x in mine])
        out[f"{s}_chance"] = {"value": M.mean([1 / x["n_options"] for x in mine]), "n": len(mine)}
        kinds = sorted({x["kind"] for x in mine})
        if len(kinds) > 1:
            for k in kinds:
                out[f"{s}.{k}"] = accuracy([x for x in mine if x["kind"] == k])
    return out


# ---------------------------------------------------------------------------------- loading

FIELDS = ("id", "set", "kind", "relation", "prompt", "target", "options", "answer")


def _check(r: dict) -> tuple[str, str] | None:
    from qilin.data.probes import SETS

    if r["set"] not in SETS:
        return "set", f"{r['set']!r} is not one of {', '.join(SETS)}"
    for key in ("prompt", "target"):
        if not isinstance(r[key], str) or not r[key]:
            return key, "expected a non-empty string"
    opts = r["options"]
    if not isinstance(opts, dict) or len(opts) < 2 or not all(isinstance(v, str) and v for v in opts.values()):
        return "options", "expected a mapping of at least two letters -> option text"
    if r["answer"] not in opts or opts[r["answer"]] != r["target"]:
        return "answer", f"{r['answer']!r} is not the letter of the target {r['target']!r}"
    return None


def load(path, cfg, skipped: dict, task: str) -> list[dict]:
    """Probe records (qilin.data.probes; `qilin probe build`) from JSONL."""
    from qilin.eval.loaders import _contract_reader, read_items

    return read_items(_contract_reader(FIELDS, _check), path, task, cfg, skipped, cfg.limit_for(task))
