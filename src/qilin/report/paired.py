"""Paired tests on the same items: may the report say that one model beats another?

The report says "holds", "beats" or "helps" only when the difference between two evaluations of the
same items is outside chance at 95%; otherwise it says the difference was not shown, and gives the
p-value or interval either way.

- Accuracies (and any 0 / 1/2 / 1 per-item score): exact sign test on the items where the two differ,
  i.e. McNemar's exact test (two-sided binomial, p = 1/2, on the discordant pairs); scipy's binomtest
  when installed, else the same sum over math.comb.
- BLEU-1, ROUGE-1, perplexity: paired bootstrap over items (the same resampled items for both
  models, 2,000 resamples, fixed seed), percentile 95% interval of the difference; shown when it
  excludes 0. Corpus BLEU and pooled perplexity are recomputed from per-item sums on each resample.

Per-item values come from each evaluation's `predictions/<task>.jsonl`, joined on `id`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from qilin.runs import iter_jsonl

RESAMPLES = 2000
SEED = 0
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """b - a on the same items, in display units; `shown` = outside chance at 95%."""

    diff: float
    n: int
    shown: bool
    test: str          # how it was tested, with its p-value or interval, for the report

    @property
    def sign(self) -> int:
        return 0 if not self.shown else (1 if self.diff > 0 else -1)


# metric -> (task, protocol, kind): its per-item values are the `protocol` lines of predictions/<task>.jsonl
# (qilin.eval.tasks: one line per item and protocol), read as `kind` (an accuracy field, or a statistic)
METRICS = {
    "cmexam.accuracy": ("cmexam", "qilin-med", "correct"),
    "cmexam.accuracy_cmexam": ("cmexam", "cmexam", "correct"),
    "cmexam.accuracy_logits": ("cmexam", "logits", "correct"),
    "preference.accuracy": ("preference", "mean", "correct"),
    "dialogue.bleu1": ("dialogue", "char", "bleu1"),
    "dialogue.rouge1": ("dialogue", "char", "rouge1"),
    "dialogue.qilinmed.bleu1": ("dialogue", "qilin-med", "qilinmed.bleu1"),
    "dialogue.qilinmed.rouge1": ("dialogue", "qilin-med", "qilinmed.rouge1"),
    "ppl.medical": ("ppl-medical", "token-nll", "ppl"),
    "ppl.general": ("ppl-general", "token-nll", "ppl"),
}


def compare(eval_a: Path, eval_b: Path, metric: str) -> Comparison | None:
    """The paired test of `metric` between two evaluation folders (each with predictions/), None when
    either lacks per-item predictions for it or they share no item."""
    if metric not in METRICS:
        return None
    task, protocol, kind = METRICS[metric]
    rows_a, rows_b = _rows(eval_a, task, protocol), _rows(eval_b, task, protocol)
    ids = [i for i in rows_a if i in rows_b]
    if not ids:
        return None
    a, b = [rows_a[i] for i in ids], [rows_b[i] for i in ids]
    if kind == "correct":
        if any(kind not in r for r in a + b):
            return None
        return sign_test([float(r[kind]) for r in a], [float(r[kind]) for r in b], scale=100)
    stat, values_a, values_b = _statistic(kind, a, b)
    return bootstrap(values_a, values_b, stat)


def sign_test(a: list[float], b: list[float], scale: float = 100) -> Comparison:
    """Exact two-sided sign test of per-item scores b vs a (McNemar's exact test for 0/1 scores)."""
    up = sum(y > x for x, y in zip(a, b))
    down = sum(y < x for x, y in zip(a, b))
    p = binomial_p(up, up + down)
    diff = scale * (sum(b) - sum(a)) / len(a)
    return Comparison(diff, len(a), p < ALPHA,
                      f"McNemar exact p = {p:.3g}; of {len(a)} items {up} better, {down} worse")


def binomial_p(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of k successes in n trials."""
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:  # the same test by direct summation: outcomes no more likely than k
        probs = [math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(n + 1)]
        return min(1.0, sum(q for q in probs if q <= probs[k] * (1 + 1e-7)))
    return float(binomtest(k, n, p).pvalue)


def bootstrap(a, b, stat) -> Comparison:
    """Paired bootstrap of stat(b) - stat(a): `a`, `b` hold per-item columns (items x columns), and the
    same resampled items are taken from both; stat(column sums, n) is the metric (`_statistic`)."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    diff = stat(b.sum(axis=0), n) - stat(a.sum(axis=0), n)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, n, size=(RESAMPLES, n))
    sums_a, sums_b = a[idx].sum(axis=1), b[idx].sum(axis=1)
    diffs = np.array([stat(sb, n) - stat(sa, n) for sa, sb in zip(sums_a, sums_b)])
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = (np.percentile(diffs, [2.5, 97.5]) if len(diffs) else (math.nan, math.nan))
    shown = bool(lo > 0 or hi < 0)
    return Comparison(float(diff), n, shown,
                      f"paired bootstrap over {n} items, 95% interval of the difference [{lo:.2f}, {hi:.2f}]")


def _statistic(kind: str, a: list[dict], b: list[dict]):
    """(stat, per-item columns of a, of b): stat(column sums, n) is the metric on those items."""
    if kind == "ppl":  # pooled perplexity = exp(sum nll / sum tokens)
        cols = lambda rows: [[r["nll"], r["tokens"]] for r in rows]  # noqa: E731
        return (lambda s, n: math.exp(s[0] / s[1]) if s[1] else math.nan), cols(a), cols(b)
    if kind.endswith("bleu1"):  # corpus BLEU-1 = 100 x brevity penalty x clipped matches / output length
        words = kind.startswith("qilinmed")
        return _bleu1, [_bleu1_counts(r, words) for r in a], [_bleu1_counts(r, words) for r in b]
    # per-item ROUGE averaged over items
    return (lambda s, n: s[0] / n), [[_rouge(r, kind)] for r in a], [[_rouge(r, kind)] for r in b]


def _bleu1(s, n) -> float:
    match, hyp, ref = s
    if hyp == 0:
        return 0.0
    bp = 1.0 if hyp > ref else math.exp(1 - ref / hyp)
    return 100 * bp * match / hyp


def _bleu1_counts(row: dict, words: bool) -> list[float]:
    from collections import Counter

    from qilin.eval import metrics as M

    split = M.words if words else M.chars
    h, r = split(row.get("prediction") or ""), split(row.get("reference") or "")
    rc = Counter(r)
    return [sum(min(c, rc[g]) for g, c in Counter(h).items()), len(h), len(r)]


def _rouge(row: dict, kind: str) -> float:
    scores = row.get("scores") or {}  # a qilin-med line's "rouge1" is its own variant's
    if scores.get("rouge1") is not None:
        return float(scores["rouge1"])
    from qilin.eval import metrics as M

    h, r = M.chars(row.get("prediction") or ""), M.chars(row.get("reference") or "")
    return 100 * (M.rouge_n_set(h, r, 1) if kind.startswith("qilinmed") else M.rouge_n(h, r, 1))


def _rows(eval_dir: Path, task: str, protocol: str | None) -> dict:
    """The prediction lines of one protocol of a task, by item id (by position where a line has none)."""
    path = eval_dir / "predictions" / f"{task}.jsonl"
    if not path.is_file():
        return {}
    return {r.get("id", r.get("line", i)): r for i, r in iter_jsonl(path, "predictions file")
            if protocol is None or r.get("protocol", protocol) == protocol}


def compare_steps(a, b, metric: str) -> Comparison | None:
    """`compare` between two report steps' evaluation folders (qilin.report.folders.Step)."""
    return compare(a.eval_dir, b.eval_dir, metric)


NO_TEST = "no per-item predictions to test it"


def interval(eval_dir: Path, metric: str) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of `metric` alone (display units), from the predictions; for
    the plots' error bars where metrics.json has no interval (BLEU, ROUGE, perplexity)."""
    import numpy as np

    if metric not in METRICS or METRICS[metric][2] == "correct":
        return None
    task, protocol, kind = METRICS[metric]
    rows = list(_rows(eval_dir, task, protocol).values())
    if not rows:
        return None
    stat, cols, _ = _statistic(kind, rows, [])
    cols = np.asarray(cols, dtype=float)
    n = len(cols)
    idx = np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))
    values = np.array([stat(s, n) for s in cols[idx].sum(axis=1)])
    values = values[np.isfinite(values)]
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if len(values) else None
