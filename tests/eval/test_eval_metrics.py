import math

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from qilin.eval import metrics as M

HYPS = ["高血压患者应当低盐饮食，定期测量血压。", "糖尿病症状是多饮多尿", "建议 多休息 多喝水", "我不知道"]
REFS = ["高血压患者应低盐饮食并定期监测血压。", "糖尿病的典型症状是多饮、多尿、多食。", "感冒要多休息，多喝水。", "应当就医检查"]


def spaced(text):
    return " ".join(M.chars(text))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_corpus_bleu_matches_sacrebleu(order):
    ours = M.corpus_bleu([M.chars(h) for h in HYPS], [M.chars(r) for r in REFS])[f"bleu{order}"]
    ref = BLEU(tokenize="none", smooth_method="none", max_ngram_order=order)
    theirs = ref.corpus_score([spaced(h) for h in HYPS], [[spaced(r) for r in REFS]]).score
    assert ours == pytest.approx(theirs, abs=0.01)
    assert ours > 0


def test_bleu_brevity_penalty_and_zero_cases():
    # hand case: hyp "ab", ref "abcd": p1 = 1, bp = exp(1 - 4/2)
    assert M.corpus_bleu([list("ab")], [list("abcd")], 1)["bleu1"] == pytest.approx(100 * math.exp(-1))
    assert M.corpus_bleu([list("xy")], [list("ab")])["bleu1"] == 0.0
    assert M.corpus_bleu([[]], [list("ab")])["bleu4"] == 0.0
    # a unigram match but no 4-gram: no smoothing, so BLEU-4 is 0
    assert M.corpus_bleu([list("abc")], [list("abc")])["bleu4"] == 0.0


class _SpaceTokenizer:
    def tokenize(self, text):
        return text.split()


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_SpaceTokenizer())
    for h, r in zip(HYPS, REFS):
        ours = M.rouge_scores(M.chars(h), M.chars(r))
        theirs = scorer.score(spaced(r), spaced(h))  # rouge-score takes (target, prediction)
        for key in ours:
            assert ours[key] == pytest.approx(100 * theirs[key].fmeasure, abs=0.01)


def test_rouge_hand_cases():
    assert M.rouge_n(list("aab"), list("ab"), 1) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert M.rouge_n_set(list("aab"), list("ab"), 1) == 1.0       # sets: repeats count once
    assert M.lcs_length("abcbdab", "bdcaba") == 4
    assert M.rouge_l([], list("ab")) == 0.0


def test_distinct():
    assert M.distinct([list("aab"), list("ab")], 1) == pytest.approx(100 * 2 / 5)
    assert M.distinct([list("aab"), list("ab")], 2) == pytest.approx(100 * 2 / 3)
    assert M.distinct([[]], 2) == 0.0


def test_dialogue_scores_keys_and_whitespace():
    out, per = M.dialogue_scores(["多 休息"], ["多休息"])
    assert out["bleu1"] == out["rouge1"] == 100.0                 # whitespace removed
    assert {"bleu4", "rougeL", "distinct2", "qilinmed.bleu1", "qilinmed.rouge2"} <= set(out)
    assert per[0]["rouge2"] == 100.0


def test_binomial_ci_wilson():
    lo, hi = M.binomial_ci(20, 100)
    assert (lo, hi) == (pytest.approx(0.1333, abs=1e-4), pytest.approx(0.2888, abs=1e-4))
    assert M.binomial_ci(0, 10)[0] == 0.0 and M.binomial_ci(10, 10)[1] == pytest.approx(1.0)
    assert M.binomial_ci(0, 0) == (0.0, 1.0)


def test_unigram_nll_hand_case():
    # train counts {1: 3, 2: 1}, vocab 4 -> p(t) = (c + 1) / (4 + 4); first token of each text unscored
    per = M.unigram_nll([[1, 1, 2, 1]], [[3, 1, 2], [0]], vocab_size=4)
    assert per[0] == (pytest.approx(-math.log(4 / 8) - math.log(2 / 8)), 2)
    assert per[1] == (0.0, 0)
    ppl, n, nll = M.pooled_perplexity(per)
    assert n == 2 and ppl == pytest.approx(math.exp(nll))


def test_weighted_prf_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    refs = ["A", "B", "ABD", "C", "A", "E", "B", "A"]
    preds = ["A", "C", "AB", "C", "", "E", "B", "B"]
    p, r, f, _ = metrics.precision_recall_fscore_support(refs, preds, average="weighted", zero_division=0)
    ours = M.weighted_prf(refs, preds)
    assert ours == pytest.approx({"precision": p, "recall": r, "f1": f}, abs=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_qilin_med_word_bleu_matches_sacrebleu(order):
    ours = M.corpus_bleu([M.words(h) for h in HYPS], [M.words(r) for r in REFS])[f"bleu{order}"]
    ref = BLEU(tokenize="none", smooth_method="none", max_ngram_order=order)
    theirs = ref.corpus_score([" ".join(M.words(h)) for h in HYPS], [[" ".join(M.words(r)) for r in REFS]]).score
    assert ours == pytest.approx(theirs, abs=0.01)
