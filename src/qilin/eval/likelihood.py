"""Tasks scored by likelihood alone, no generation: perplexity (with the add-one unigram baseline a
model must beat) and preference accuracy (does the model give the chosen answer the higher
log-probability?), each from one forward pass per sequence.
"""

from __future__ import annotations

from pathlib import Path

from qilin.eval import metrics as M
from qilin.model.chat import prompt_text
from qilin.runs import iter_jsonl


def predict_ppl(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """Summed NLL and token count per text; with `unigram_train`, the unigram baseline's NLL of the
    same tokens beside it."""
    texts = [r["text"] for r in rows]
    per = lm.token_nll(texts, cfg.ppl_max_length, cfg.batch_size)
    lines = [{"task": task, "protocol": "token-nll", "id": r["id"], "nll": nll, "tokens": n}
             for r, (nll, n) in zip(rows, per)]
    if cfg.unigram_train:
        base = M.unigram_nll(_train_ids(lm, cfg.unigram_train), _text_ids(lm, texts), len(lm.tokenizer))
        for line, (s, _) in zip(lines, base):
            line["unigram_nll"] = s
            line["unigram_fit_on"] = [str(p) for p in cfg.unigram_train]
    return lines


def score_ppl(lines: list[dict]) -> dict:
    ppl, tokens, nll = M.pooled_perplexity([(x["nll"], x["tokens"]) for x in lines])
    out = {"perplexity": {"value": ppl, "n": len(lines), "tokens": tokens},
           "nll": {"value": nll, "n": len(lines), "tokens": tokens}}
    if lines and "unigram_nll" in lines[0]:
        base = M.pooled_perplexity([(x["unigram_nll"], x["tokens"]) for x in lines])[0]
        out["unigram_perplexity"] = {"value": base, "n": len(lines), "tokens": tokens,
                                     "fit_on": lines[0].get("unigram_fit_on")}
    return out


def _text_ids(lm, texts: list[str]):
    return (lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)


def _train_ids(lm, paths: list[str]):
    for path in paths:
        yield from _text_ids(lm, (r["text"] for _, r in iter_jsonl(Path(path), "unigram training file")
                                  if isinstance(r.get("text"), str)))


def predict_preference(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """Log-probabilities of both answers after the conversation (earlier turns included), each scored
    as the chat template renders the assistant turn (answer + end of turn), as DPO trains it."""
    prompts = [prompt_text(lm.tokenizer, r.get("history", []) + [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    conts = [(answer_text(lm.tokenizer, r, p, r["chosen"]), answer_text(lm.tokenizer, r, p, r["rejected"]))
             for r, p in zip(rows, prompts)]
    scores = lm.sequence_logprob(prompts * 2, [c for c, _ in conts] + [x for _, x in conts], cfg.batch_size)
    lines = []
    for proto in protocols:
        for i, (r, p) in enumerate(zip(rows, prompts)):
            (cs, cn), (rs, rn) = scores[i], scores[len(rows) + i]
            c, x = (cs, rs) if proto == "summed-logprob" else (cs / max(cn, 1), rs / max(rn, 1))
            lines.append({"task": task, "protocol": proto, "id": r["id"], "prompt": p, "chosen": conts[i][0],
                          "rejected": conts[i][1], "chosen_logprob": cs, "chosen_tokens": cn,
                          "rejected_logprob": rs, "rejected_tokens": rn, "margin": c - x, "correct": c > x})
    return lines


def score_preference(lines: list[dict]) -> dict:
    k, n = sum(bool(x["correct"]) for x in lines), len(lines)
    return {"accuracy": {"value": k / n if n else None, "n": n, "ci95": list(M.binomial_ci(k, n))}}


def answer_text(tokenizer, row: dict, prompt: str, answer: str) -> str:
    """The assistant turn as the chat template renders it after `prompt` (answer + end-of-turn
    marker), so the score covers what DPO trains; falls back to the bare answer when the full
    conversation does not start with the generation prompt."""
    messages = row.get("history", []) + [{"role": "user", "content": row["prompt"]},
                                         {"role": "assistant", "content": answer}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    return full[len(prompt):] if full.startswith(prompt) else answer
