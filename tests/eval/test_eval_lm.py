import math

import pytest
import torch

from qilin.model.chat import prompt_text as chat_prompt

PROMPTS = ["高血压", "糖尿病的典型症状是多饮、多尿", "答案：", "感冒通常由病毒引起，多休息，多喝水。阿司匹林"]


def _greedy_one(lm, prompt, max_new, ids=None):
    """Reference: unpadded, no KV cache, argmax by hand (from `ids` where given)."""
    ids = lm.encode(prompt) if ids is None else ids
    new = []
    with torch.inference_mode():
        for _ in range(max_new):
            logits = lm.model(input_ids=torch.tensor([ids + new]), use_cache=False).logits[0, -1]
            t = int(logits.argmax())
            if t in lm.stop_ids:
                break
            new.append(t)
    return lm.tokenizer.decode(new, skip_special_tokens=True)


def test_batched_left_padded_generation_equals_one_by_one(tiny_lm):
    prompts = PROMPTS + [chat_prompt(tiny_lm.tokenizer, [{"role": "user", "content": "你好"}])]
    batched = tiny_lm.generate(prompts, max_new_tokens=12, batch_size=3)
    assert batched == [_greedy_one(tiny_lm, p, 12) for p in prompts]
    assert tiny_lm.generate(prompts, max_new_tokens=12, batch_size=1) == batched


def test_a_prompt_past_the_models_positions_keeps_its_last_tokens(tiny_lm, monkeypatch, caplog):
    """lm-evaluation-harness's rule: a prompt keeps at most positions - max_new_tokens last tokens, so the
    answer is generated within the positions the model was built for."""
    from qilin.errors import QilinError

    monkeypatch.setattr(tiny_lm.model.config, "max_position_embeddings", 40)
    long = "".join(PROMPTS) * 3
    ids = tiny_lm.encode(long)
    assert len(ids) > 28
    with caplog.at_level("WARNING", logger="qilin.model.runtime"):
        got = tiny_lm.generate([long, PROMPTS[0]], max_new_tokens=12, batch_size=2)
    assert got == [_greedy_one(tiny_lm, None, 12, ids[-28:]), _greedy_one(tiny_lm, PROMPTS[0], 12)]
    assert got[0] != _greedy_one(tiny_lm, long, 12)  # the whole prompt would have given another answer
    assert "1 of 2 prompts are longer than the model's 40 positions minus 12 new tokens" in caplog.text
    with pytest.raises(QilinError, match="40 new tokens leave no room"):
        tiny_lm.generate([PROMPTS[0]], max_new_tokens=40)


def test_next_token_logprobs_equals_full_softmax(tiny_lm):
    cands = [tiny_lm.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "ABCDE"]
    got = tiny_lm.next_token_logprobs(PROMPTS, cands, batch_size=3)
    for prompt, row in zip(PROMPTS, got):
        with torch.inference_mode():
            logits = tiny_lm.model(input_ids=torch.tensor([tiny_lm.encode(prompt)])).logits[0, -1]
        want = torch.log_softmax(logits, -1)[cands].tolist()
        assert row == pytest.approx(want, abs=1e-5)


def _manual_nll(lm, ids, first):
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0], -1)
    return -sum(logp[j - 1, ids[j]].item() for j in range(first, len(ids))), len(ids) - first


def test_sequence_logprob_equals_manual(tiny_lm):
    conts = ["低盐饮食", "多休息<|im_end|>\n", "", "A"]
    got = tiny_lm.sequence_logprob(PROMPTS, conts, batch_size=3)
    for p, c, (s, n) in zip(PROMPTS, conts, got):
        pi = tiny_lm.encode(p)
        ci = tiny_lm.tokenizer(c, add_special_tokens=False)["input_ids"]
        nll, m = _manual_nll(tiny_lm, pi + ci, len(pi))
        assert n == m == len(ci)
        assert s == pytest.approx(-nll, abs=1e-4)


def test_perplexity_equals_exp_mean_nll_and_windows_cover_every_token(tiny_lm):
    texts = PROMPTS + ["感"]                       # a one-token text scores nothing
    per = tiny_lm.token_nll(texts, max_length=512, batch_size=2)
    total, count = 0.0, 0
    for text, (s, n) in zip(texts, per):
        ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        nll, m = _manual_nll(tiny_lm, ids, 1) if len(ids) > 1 else (0.0, 0)
        assert n == m and s == pytest.approx(nll, abs=1e-4)
        total, count = total + nll, count + m
    from qilin.eval.metrics import pooled_perplexity

    ppl, n, mean_nll = pooled_perplexity(per)
    assert n == count and mean_nll == pytest.approx(total / count, abs=1e-5)
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    # short windows: still every token after the first of each text, scored exactly once
    short = tiny_lm.token_nll(texts, max_length=4, batch_size=2)
    assert [n for _, n in short] == [n for _, n in per]


def test_next_token_logprobs_with_shared_prefix_caches_equals_full_passes(tiny_lm, monkeypatch):
    """Two groups with prefixes of different lengths (one left-padded prefix pass), their prompts
    batched across groups, and a lone prompt: all equal to plain full passes."""
    long = "以下是单项选择题。\n\n题目：高血压患者应当低盐饮食？\nA. 对\nB. 错\n答案是：A\n\n题目："
    short = "糖尿病的典型症状是多饮、多尿、多食和体重下降。题目："
    prompts = [long + q for q in ("糖尿病的典型症状？\n答案是：", "感冒通常由病毒引起？答案是：", "阿司匹林\n答案是：")]
    prompts += [short + q for q in ("高血压？答案：", "感冒？多喝水。答案：")] + ["完全不同的前缀：答案是："]
    cands = [tiny_lm.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "ABCD"]
    plain = tiny_lm.next_token_logprobs(prompts, cands, batch_size=2)
    seen = []
    real = type(tiny_lm)._grouped
    monkeypatch.setattr(type(tiny_lm), "_grouped",
                        lambda self, out, ids, groups, *a: seen.append([n for n, _ in groups]) or real(self, out, ids, groups, *a))
    shared = tiny_lm.next_token_logprobs(prompts, cands, batch_size=2, groups=["s", "s", "s", "t", "t", "u"])
    assert len(seen) == 1 and len(seen[0]) == 2 and seen[0][0] != seen[0][1]   # one pass, two prefixes
    for a, b in zip(plain, shared):
        assert a == pytest.approx(b, abs=1e-5)
