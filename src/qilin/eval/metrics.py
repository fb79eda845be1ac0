"""Generation metrics for Chinese (character level), confidence intervals, the unigram baseline.

Why our own code rather than sacrebleu / rouge-score / nltk: METHODS.md section 4 fixes Chinese
variants those packages do not expose directly. The default scores characters as tokens with
whitespace removed (sacrebleu's `zh` tokenizer keeps runs of Latin letters and digits as words, and
rouge-score's default tokenizer drops every non-ASCII character, so it scores Chinese as empty), and
the `qilin-med` variant scores ROUGE on *sets* of unique character n-grams, which neither package
offers. The definitions are short; the tests check them against sacrebleu and rouge-score (to 0.01)
wherever the definitions coincide.

All BLEU/ROUGE/Distinct values are percentages (x100). Token lists are plain `list[str]`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def chars(text: str) -> list[str]:
    """Characters as tokens, whitespace removed (the default Chinese tokenisation)."""
    return [c for c in text if not c.isspace()]


def words(text: str) -> list[str]:
    """jieba words, whitespace dropped (the `qilin-med` BLEU tokenisation)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict ..." on first use
    return [w for w in jieba.lcut(text) if w.strip()]


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


# ---------------------------------------------------------------------------------------- BLEU

def corpus_bleu(hyps: list[list[str]], refs: list[list[str]], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n, cumulative (uniform weights over orders 1..n), no smoothing, one
    reference per hypothesis, brevity penalty on the corpus lengths; {"bleu1": .., "bleu4": ..} x100.

    Clipped n-gram matches and totals are summed over the corpus before dividing (Papineni et al.),
    so one empty or short output does not zero the score; any order with no match gives 0 for that
    cumulative BLEU and every higher one, as in sacrebleu with smooth_method='none'.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    match, total = [0] * max_n, [0] * max_n
    for h, r in zip(hyps, refs):
        for n in range(1, max_n + 1):
            hc, rc = ngrams(h, n), ngrams(r, n)
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    hyp_len, ref_len = sum(map(len, hyps)), sum(map(len, refs))
    bp = 0.0 if hyp_len == 0 else (1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len))
    out, log_sum = {}, 0.0
    for n in range(1, max_n + 1):
        if match[n - 1] == 0 or log_sum == -math.inf:
            log_sum = -math.inf
        else:
            log_sum += math.log(match[n - 1] / total[n - 1])
        out[f"bleu{n}"] = 0.0 if log_sum == -math.inf else 100 * bp * math.exp(log_sum / n)
    return out


# --------------------------------------------------------------------------------------- ROUGE

def f1(overlap: float, n_hyp: float, n_ref: float) -> float:
    """F1 from an overlap count; 0 when there is no overlap (also covers empty hypothesis/reference)."""
    if overlap == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    """Count-based ROUGE-N F1 of one pair (clipped n-gram counts, as rouge-score), in [0, 1]."""
    hc, rc = ngrams(hyp, n), ngrams(ref, n)
    overlap = sum(min(c, rc[g]) for g, c in hc.items())
    return f1(overlap, sum(hc.values()), sum(rc.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """ROUGE-L F1 of one pair (sentence-level LCS, beta = 1, as rouge-score's rougeL), in [0, 1]."""
    return f1(lcs_length(hyp, ref), len(hyp), len(ref))


def rouge_n_set(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    """`qilin-med` ROUGE-N F1: overlap of the *sets* of unique n-grams (repeats count once)."""
    hs, rs = set(ngrams(hyp, n)), set(ngrams(ref, n))
    return f1(len(hs & rs), len(hs), len(rs))


def rouge_scores(hyp: Sequence[str], ref: Sequence[str]) -> dict[str, float]:
    """Per-example scores (x100) of the default variant: rouge1, rouge2, rougeL."""
    return {"rouge1": 100 * rouge_n(hyp, ref, 1), "rouge2": 100 * rouge_n(hyp, ref, 2),
            "rougeL": 100 * rouge_l(hyp, ref)}


# ------------------------------------------------------------------------------------ Distinct

def distinct(outputs: Iterable[Sequence[str]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over all outputs, x100; 0 if none."""
    seen: set = set()
    total = 0
    for toks in outputs:
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return 100 * len(seen) / total if total else 0.0


# ---------------------------------------------------------------------------- whole-corpus sets

def dialogue_scores(outputs: list[str], references: list[str]) -> tuple[dict[str, float], list[dict]]:
    """Every dialogue metric from raw strings: (corpus metrics, per-example scores).

    Default variant: characters, corpus BLEU-1..4, ROUGE-1/2/L averaged, Distinct-1/2.
    `qilinmed.*`: BLEU-1..4 on jieba words, ROUGE-1/2 on unique character n-gram sets, averaged.
    """
    hc, rc = [chars(o) for o in outputs], [chars(r) for r in references]
    per = []
    for h, r in zip(hc, rc):
        s = rouge_scores(h, r)
        s["qilinmed.rouge1"] = 100 * rouge_n_set(h, r, 1)
        s["qilinmed.rouge2"] = 100 * rouge_n_set(h, r, 2)
        per.append(s)
    out = corpus_bleu(hc, rc)
    for key in ("rouge1", "rouge2", "rougeL", "qilinmed.rouge1", "qilinmed.rouge2"):
        out[key] = mean([s[key] for s in per])
    out["distinct1"], out["distinct2"] = distinct(hc, 1), distinct(hc, 2)
    qm = corpus_bleu([words(o) for o in outputs], [words(r) for r in references])
    out.update({f"qilinmed.{k}": v for k, v in qm.items()})
    return out, per


def weighted_prf(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """CMExam's weighted precision / recall / F1 over answer strings ("C", "ABD" are classes), as
    scikit-learn's `precision_recall_fscore_support(average="weighted", zero_division=0)`: per class
    P, R, F1, averaged with the class's share of the references as weight (a class that is only
    ever predicted, never a reference, has weight 0). In [0, 1]."""
    support = Counter(references)
    predicted = Counter(predictions)
    hits = Counter(r for r, p in zip(references, predictions, strict=True) if r == p)
    out = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    total = sum(support.values())
    for label, n in support.items():
        p = hits[label] / predicted[label] if predicted[label] else 0.0
        r = hits[label] / n
        f = 2 * p * r / (p + r) if p + r else 0.0
        for key, value in (("precision", p), ("recall", r), ("f1", f)):
            out[key] += value * n / total
    return out


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


# ------------------------------------------------------------------------ confidence intervals

def binomial_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (95% by default); (0, 1) when n == 0.

    Wilson rather than the normal approximation: at the small n and near-chance accuracies of the
    tiny CPU models the normal interval leaves [0, 1] and undercovers.
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------- unigram baseline

def unigram_nll(train_ids: Iterable[Sequence[int]], eval_ids: Iterable[Sequence[int]],
                vocab_size: int) -> list[tuple[float, int]]:
    """Per eval sequence (summed NLL in nats, tokens scored) under an add-one unigram model fit on
    `train_ids`. Scores every token after the first, exactly the tokens `LM.token_nll` scores, so
    the two perplexities compare like for like."""
    counts = Counter()
    for ids in train_ids:
        counts.update(ids)
    log_total = math.log(sum(counts.values()) + vocab_size)
    out = []
    for ids in eval_ids:
        scored = ids[1:]
        out.append((sum(log_total - math.log(counts[t] + 1) for t in scored), len(scored)))
    return out


def unigram_perplexity(train_texts: Iterable[str], eval_texts: list[str],
                       tokenizer) -> tuple[float, int, float]:
    """(perplexity, tokens scored, mean NLL) of the add-one unigram baseline: a model must beat
    this to have learned anything beyond token frequencies (STACK.md: about 7.96 nats/token)."""
    per = unigram_nll(_token_ids(tokenizer, train_texts), _token_ids(tokenizer, eval_texts), len(tokenizer))
    return pooled_perplexity(per)


def pooled_perplexity(per_text: Sequence[tuple[float, int]]) -> tuple[float, int, float]:
    """Token-weighted (perplexity, tokens, mean NLL) from per-text (summed NLL, tokens)."""
    n = sum(t for _, t in per_text)
    nll = sum(s for s, _ in per_text) / n if n else float("nan")
    return math.exp(nll) if n else float("nan"), n, nll


def _token_ids(tokenizer, texts: Iterable[str]) -> Iterable[list[int]]:
    for text in texts:
        yield tokenizer(text, add_special_tokens=False)["input_ids"]
