"""Free-text tasks (Huatuo-26M-style dialogue, CMB-Clin, multi-turn dialogue through eval/multiturn.py):
greedy answers through the chat template, scored by BLEU/ROUGE variants (each named) and, for CMB-Clin, by the official LLM judge when an
endpoint is given. Without a judge, the official CMB-Clin score is not computed, and every result
line of the task says so.
"""

from __future__ import annotations

from qilin.eval import metrics as M
from qilin.eval.prompts import cmb_clin_messages
from qilin.model.chat import prompt_text

CMB_CLIN_PROMPT_TEXT = ("chat template; turn 1 = '以下是一位病人的病例：\\n{description}\\n{question 1}'; turn k carries "
                        "the earlier questions with their REFERENCE answers, then question k")
JUDGES = ("cmb-clin-judge", "cmb-clin-rubric", "cmb-clin-judge-custom")

# metric -> key in metrics.dialogue_scores' per-example dict, per variant
VARIANT_KEYS = {"char": {"rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL"},
                "qilin-med": {"rouge1": "qilinmed.rouge1", "rouge2": "qilinmed.rouge2"}}


def conversations(task: str, r: dict) -> list[list[dict]]:
    """The conversations to answer for one item: one per turn. CMB-Clin turn k sees the case, the
    earlier questions and their REFERENCE answers (METHODS.md 4), never the model's own."""
    if task == "dialogue":
        return [[{"role": "user", "content": r["question"]}]]
    if task == "dialogue-multiturn":  # eval/multiturn.py: each patient turn after the REFERENCE history, no opening
        convs, history = [], []
        for turn in r["turns"]:
            convs.append(history + [{"role": "user", "content": turn["question"]}])
            history = convs[-1] + [{"role": "assistant", "content": turn["answer"]}]
        return convs
    return cmb_clin_messages(r)


def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """Greedy answers, scored per item by every requested variant; `judge` adds the judge's ratings."""
    items = []  # (id, conversation, reference, (row, turn))
    for r in rows:
        convs = conversations(task, r)
        refs = [r["answer"]] if task == "dialogue" else [t["answer"] for t in r["turns"]]
        ids = [r["id"]] if task == "dialogue" else [f"{r['id']}-{k + 1}" for k in range(len(convs))]
        items += zip(ids, convs, refs, [(r, k) for k in range(len(convs))])
    prompts = [prompt_text(lm.tokenizer, conv) for _, conv, _, _ in items]
    outputs = lm.generate(prompts, cfg.new_tokens(task), cfg.batch_size)
    base = [{"task": task, "id": i, "prompt": p, "output": o, "prediction": o.strip(), "reference": ref}
            for (i, _, ref, _), p, o in zip(items, prompts, outputs)]
    lines = []
    for proto in protocols:
        if proto in JUDGES:
            from qilin.eval.judge import cmb_clin_judge_fields, judge_cmb_clin, load_template

            template = load_template(cfg.judge_template)[0]
            fields = [cmb_clin_judge_fields(row, k, b["prediction"]) for (_, _, _, (row, k)), b in zip(items, base)]
            rated = judge_cmb_clin(cfg.judge, cfg.judge_model, fields, template)
            lines += [{**b, "protocol": proto, "scores": sc} for b, sc in zip(base, rated)]
            continue
        per = M.dialogue_scores([b["prediction"] for b in base], [b["reference"] for b in base])[1]
        keys = VARIANT_KEYS[proto]
        lines += [{**b, "protocol": proto, "scores": {k: sc[src] for k, src in keys.items() if src in sc}}
                  for b, sc in zip(base, per)]
    return lines


def score(lines: list[dict]) -> dict:
    """Corpus BLEU-1..4 (+ Distinct-1/2 for `char`) from the predictions and references, and the
    per-example ROUGE scores of the lines averaged; `judge`: each criterion's mean rating."""
    n = len(lines)
    if lines and lines[0]["protocol"] in JUDGES:
        from qilin.eval.judge import CMB_CLIN_CRITERIA

        out = {}
        for c in CMB_CLIN_CRITERIA + ("overall",):
            vals = [x["scores"][c] for x in lines if x["scores"].get(c) is not None]
            out[c] = {"value": M.mean(vals) if vals else None, "n": len(vals)}
        out["unparsed"] = {"value": sum(x["scores"].get("overall") is None for x in lines), "n": n}
        return out
    proto = lines[0]["protocol"] if lines else "char"
    tok = M.chars if proto == "char" else M.words
    hyps, refs = [tok(x["prediction"]) for x in lines], [tok(x["reference"]) for x in lines]
    out = {k: {"value": v, "n": n} for k, v in M.corpus_bleu(hyps, refs).items()}
    for key in VARIANT_KEYS[proto]:
        out[key] = {"value": M.mean([x["scores"][key] for x in lines]), "n": n}
    if proto == "char":
        for k in (1, 2):
            out[f"distinct{k}"] = {"value": M.distinct(hyps, k), "n": n}
    return out
