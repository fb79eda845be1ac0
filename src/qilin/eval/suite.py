"""The evaluation run after every stage: `evaluate(model_dir, data_dir, cfg, out_dir)`.

Each task is a small declaration (its file, required fields, and a function rows -> result) in
`TASKS`. A task function returns `metrics`, `n`, `ci95`, `protocols` (one line per metric naming
prompt, shots, decoding, extraction and metric variant) and `predictions`, one record per item from
which every metric of the task can be recomputed (`recompute()` does exactly that, and the tests
check it agrees).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal

from qilin.config import doc
from qilin.errors import InputError, QilinError
from qilin.eval import metrics as M
from qilin.eval.extract import first_letter_run
from qilin.eval.lm import LM, chat_prompt, load_lm
from qilin.runs import atomic_write_json, atomic_write_jsonl, iter_jsonl

ALL_TASKS = ["cmexam", "dialogue", "ppl_medical", "ppl_general", "preference"]


@dataclass
class EvalConfig:
    tasks: list[str] = doc("tasks to run, from: " + ", ".join(ALL_TASKS), ALL_TASKS)
    limit: int | None = doc("at most this many items per task (the first ones); None = all", None)
    batch_size: int = doc("prompts per forward/generate batch", 16)
    cmexam_max_new_tokens: int = doc("new tokens generated per CMExam question (qilin-med protocol: 50)", 50)
    dialogue_max_new_tokens: int = doc("new tokens generated per dialogue answer", 96)
    ppl_max_length: int = doc("window length in tokens for perplexity; longer texts are cut into windows", 512)
    preference_normalise: Literal["sum", "mean"] = doc(
        "preference accuracy compares the answers' summed log-probability ('sum', DPO's implicit "
        "preference) or per-token mean ('mean', removes the length effect)", "sum")
    unigram_train: list[str] = doc(
        "JSONL files with a 'text' field to fit the add-one unigram baseline reported beside "
        "perplexity (e.g. the data stage's train/cpt.jsonl); empty = no baseline", [])


def evaluate(model_dir: str | Path, data_dir: str | Path, cfg: EvalConfig, out_dir: str | Path) -> dict:
    """Run `cfg.tasks` on the model in `model_dir` with the eval files in `data_dir/eval/`; write
    `out_dir/metrics.json` and `out_dir/predictions/<task>.jsonl`; return the metrics.json dict."""
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise QilinError(f"eval tasks: unknown {', '.join(unknown)}; known: {', '.join(ALL_TASKS)}")
    rows = {t: _read_task(Path(data_dir) / "eval", t, cfg.limit) for t in cfg.tasks}  # fail before loading
    lm = load_lm(model_dir)
    result: dict = {"metrics": {}, "protocols": {}, "n": {}, "ci95": {}, "seconds": {}}
    out = Path(out_dir)
    for task in cfg.tasks:
        start = time.time()
        r = TASKS[task].run(lm, rows[task], cfg)
        for key in ("metrics", "protocols", "n", "ci95"):
            result[key].update(r[key])
        result["seconds"][task] = round(time.time() - start, 2)
        atomic_write_jsonl(out / "predictions" / f"{task}.jsonl", r["predictions"])
    result["metrics"] = {k: _finite(v) for k, v in result["metrics"].items()}  # NaN is not JSON: null
    atomic_write_json(out / "metrics.json", result)
    return result


# ---------------------------------------------------------------------------------- CMExam

CMEXAM_PROMPT = "{question}\n{options}\n答案："
_QM = ("qilin-med: raw prompt '{question}\\n{A text\\nB text...}\\n答案：' (no chat template), zero-shot, "
       "greedy, {k} new tokens; prediction = first ASCII word made only of option letters; exact match")
_LOGITS = ("logits: same raw prompt, zero-shot, one forward pass; prediction = option letter (among "
           "this question's options) with the highest next-token log-prob; exact match")


_SHUFFLED = ("expected accuracy of the model's own {protocol} answers shuffled across questions: what its "
             "preference among answer letters scores without reading the questions")


def cmexam_prompt(row: dict) -> str:
    opts = "\n".join(f"{k} {v}" for k, v in sorted(row["options"].items()))
    return CMEXAM_PROMPT.format(question=row["question"], options=opts)


def run_cmexam(lm: LM, rows: list[dict], cfg: EvalConfig) -> dict:
    """Both multiple-choice protocols on the same prompts: generation (qilin-med) and logits."""
    prompts = [cmexam_prompt(r) for r in rows]
    outputs = lm.generate(prompts, cfg.cmexam_max_new_tokens, cfg.batch_size)
    letters = sorted({k for r in rows for k in r["options"]})
    ids = [_single_token(lm, k) for k in letters]
    logprobs = lm.next_token_logprobs(prompts, ids, cfg.batch_size)
    preds = []
    for r, p, o, lp in zip(rows, prompts, outputs, logprobs):
        own = {k: v for k, v in zip(letters, lp) if k in r["options"]}
        pred, pred_l = first_letter_run(o, "".join(sorted(r["options"]))), max(own, key=own.get)
        preds.append({"id": r["id"], "prompt": p, "output": o, "prediction": pred, "reference": r["answer"],
                      "correct": pred == r["answer"], "logprobs": own, "prediction_logits": pred_l,
                      "correct_logits": pred_l == r["answer"], "n_options": len(r["options"])})
    return {**recompute_cmexam(preds), "predictions": preds,
            "protocols": {"cmexam.accuracy": _QM.replace("{k}", str(cfg.cmexam_max_new_tokens)),
                          "cmexam.accuracy_single": _QM.replace("{k}", str(cfg.cmexam_max_new_tokens))
                          + "; single-answer questions only",
                          "cmexam.accuracy_logits": _LOGITS + "; all questions (multi-answer ones count wrong)",
                          "cmexam.accuracy_logits_single": _LOGITS + "; single-answer questions only",
                          "cmexam.chance": "mean of 1/(number of options) over single-answer questions",
                          "cmexam.majority": "accuracy of always answering the most frequent reference answer",
                          "cmexam.shuffled": _SHUFFLED.format(protocol="qilin-med"),
                          "cmexam.shuffled_logits": _SHUFFLED.format(protocol="logits")}}


def recompute_cmexam(preds: list[dict]) -> dict:
    """CMExam metrics, n and Wilson 95% intervals from the prediction records alone."""
    single = [p for p in preds if len(p["reference"]) == 1]
    groups = {"cmexam.accuracy": (preds, "correct"), "cmexam.accuracy_single": (single, "correct"),
              "cmexam.accuracy_logits": (preds, "correct_logits"),
              "cmexam.accuracy_logits_single": (single, "correct_logits")}
    out: dict = {"metrics": {}, "n": {}, "ci95": {}}
    for name, (items, key) in groups.items():
        k = sum(bool(p[key]) for p in items)
        out["metrics"][name] = k / len(items) if items else float("nan")
        out["n"][name] = len(items)
        out["ci95"][name] = list(M.binomial_ci(k, len(items)))
    out["metrics"]["cmexam.chance"] = M.mean([1 / p["n_options"] for p in single]) if single else float("nan")
    out["n"]["cmexam.chance"] = len(single)
    # A small model often answers one letter to everything; where the answer key is not balanced that
    # alone moves accuracy away from chance. These two reference lines tell such a shift from reading.
    references = Counter(p["reference"] for p in preds)
    out["metrics"]["cmexam.majority"] = max(references.values()) / len(preds) if preds else float("nan")
    for name, key in (("cmexam.shuffled", "prediction"), ("cmexam.shuffled_logits", "prediction_logits")):
        answers = Counter(p[key] for p in preds)
        out["metrics"][name] = (sum(n * references[a] for a, n in answers.items()) / len(preds) ** 2
                                if preds else float("nan"))
    for name in ("cmexam.majority", "cmexam.shuffled", "cmexam.shuffled_logits"):
        out["n"][name] = len(preds)
    return out


def _single_token(lm: LM, letter: str) -> int:
    ids = lm.tokenizer(letter, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise QilinError(f"option letter {letter!r} is {len(ids)} tokens in this tokenizer; the logits protocol needs one")
    return ids[0]


# -------------------------------------------------------------------------------- dialogue

_DIALOGUE = "chat template (user = question), zero-shot, greedy, {k} new tokens; whole answer; "
_DIALOGUE_METRICS = {  # metric kind -> its variant, one phrase each
    "bleu": "corpus BLEU-{n} on characters (whitespace removed), cumulative, no smoothing, x100",
    "rouge": "ROUGE-{n} F1 on characters (whitespace removed; n-gram counts, LCS for L), per example averaged, x100",
    "distinct": "Distinct-{n}: unique / all character n-grams over all outputs, x100",
    "qilinmed.bleu": "qilin-med variant: corpus BLEU-{n} on jieba words, cumulative, no smoothing, x100",
    "qilinmed.rouge": "qilin-med variant: ROUGE-{n} F1 on sets of unique character n-grams, "
                      "per example averaged, x100",
}


def _dialogue_protocol(metric: str, max_new_tokens: int) -> str:
    kind, n = metric.removeprefix("dialogue.").rstrip("12345L"), metric[-1]
    return _DIALOGUE.format(k=max_new_tokens) + _DIALOGUE_METRICS[kind].format(n=n)


def run_dialogue(lm: LM, rows: list[dict], cfg: EvalConfig) -> dict:
    prompts = [chat_prompt(lm.tokenizer, [{"role": "user", "content": r["question"]}]) for r in rows]
    outputs = lm.generate(prompts, cfg.dialogue_max_new_tokens, cfg.batch_size)
    preds = [{"id": r["id"], "prompt": p, "output": o, "prediction": o.strip(), "reference": r["answer"]}
             for r, p, o in zip(rows, prompts, outputs)]
    out = recompute_dialogue(preds)
    for p, scores in zip(preds, out.pop("per_item")):
        p["scores"] = scores
    out["protocols"] = {m: _dialogue_protocol(m, cfg.dialogue_max_new_tokens) for m in out["metrics"]}
    return {**out, "predictions": preds}


def recompute_dialogue(preds: list[dict]) -> dict:
    scores, per = M.dialogue_scores([p["prediction"] for p in preds], [p["reference"] for p in preds])
    return {"metrics": {f"dialogue.{k}": v for k, v in scores.items()},
            "n": {f"dialogue.{k}": len(preds) for k in scores}, "ci95": {}, "per_item": per}


# ------------------------------------------------------------------------------ perplexity

def run_ppl(lm: LM, rows: list[dict], cfg: EvalConfig, name: str) -> dict:
    """Token-weighted perplexity; beside it the add-one unigram baseline when `unigram_train` is set."""
    texts = [r["text"] for r in rows]
    per = lm.token_nll(texts, cfg.ppl_max_length, cfg.batch_size)
    preds = [{"id": r["id"], "nll": s, "tokens": n} for r, (s, n) in zip(rows, per)]
    if cfg.unigram_train:
        base = M.unigram_nll(_train_ids(lm, cfg.unigram_train), _text_ids(lm, texts), len(lm.tokenizer))
        for p, (s, _) in zip(preds, base):
            p["unigram_nll"] = s
    out = recompute_ppl(preds, name)
    window = f"texts scored in windows of {cfg.ppl_max_length} tokens overlapping by one; every token after a text's first, no EOS"
    out["protocols"] = {
        f"ppl.{name}": f"perplexity = exp(token-weighted mean NLL); {window}",
        f"ppl.{name}_nll": f"token-weighted mean NLL in nats; {window}",
        f"ppl.unigram_{name}": "add-one unigram model fit on " + ", ".join(map(str, cfg.unigram_train))
                               + "; same tokens scored; the baseline a model must beat"}
    out["protocols"] = {k: v for k, v in out["protocols"].items() if k in out["metrics"]}
    return {**out, "predictions": preds}


def recompute_ppl(preds: list[dict], name: str) -> dict:
    ppl, _, nll = M.pooled_perplexity([(p["nll"], p["tokens"]) for p in preds])
    metrics = {f"ppl.{name}": ppl, f"ppl.{name}_nll": nll}
    if preds and "unigram_nll" in preds[0]:
        metrics[f"ppl.unigram_{name}"] = M.pooled_perplexity([(p["unigram_nll"], p["tokens"]) for p in preds])[0]
    return {"metrics": metrics, "n": {k: len(preds) for k in metrics}, "ci95": {}}  # tokens: in predictions


def _text_ids(lm: LM, texts: list[str]):
    return (lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)


def _train_ids(lm: LM, paths: list[str]):
    for path in paths:
        yield from _text_ids(lm, (r["text"] for r in _read_jsonl(Path(path), ["text"])))


# ------------------------------------------------------------------------------ preference

def run_preference(lm: LM, rows: list[dict], cfg: EvalConfig) -> dict:
    """Does the model give the chosen answer a higher log-probability than the rejected one?"""
    prompts = [chat_prompt(lm.tokenizer, [{"role": "user", "content": r["prompt"]}]) for r in rows]
    conts = [(answer_text(lm.tokenizer, r["prompt"], p, r["chosen"]),
              answer_text(lm.tokenizer, r["prompt"], p, r["rejected"])) for r, p in zip(rows, prompts)]
    scores = lm.sequence_logprob(prompts * 2, [c for c, _ in conts] + [x for _, x in conts], cfg.batch_size)
    preds = []
    for i, (r, p) in enumerate(zip(rows, prompts)):
        (cs, cn), (rs, rn) = scores[i], scores[len(rows) + i]
        preds.append({"id": r["id"], "prompt": p, "chosen": conts[i][0], "rejected": conts[i][1],
                      "chosen_logprob": cs, "chosen_tokens": cn, "rejected_logprob": rs, "rejected_tokens": rn})
    out = recompute_preference(preds, cfg.preference_normalise)
    out["protocols"] = {"preference.accuracy": (
        "chat template (user = prompt, assistant = answer incl. end-of-turn, as DPO trains); share of pairs where "
        + ("the summed log-prob of the chosen answer exceeds the rejected one's (DPO's implicit preference, no reference model)"
           if cfg.preference_normalise == "sum" else "the per-token mean log-prob of the chosen answer exceeds the rejected one's")
        + "; ties count wrong")}
    return {**out, "predictions": preds}


def recompute_preference(preds: list[dict], normalise: str = "sum") -> dict:
    for p in preds:
        c, r = p["chosen_logprob"], p["rejected_logprob"]
        if normalise == "mean":
            c, r = c / max(p["chosen_tokens"], 1), r / max(p["rejected_tokens"], 1)
        p["margin"], p["correct"] = c - r, c > r
    k = sum(p["correct"] for p in preds)
    acc = k / len(preds) if preds else float("nan")
    return {"metrics": {"preference.accuracy": acc}, "n": {"preference.accuracy": len(preds)},
            "ci95": {"preference.accuracy": list(M.binomial_ci(k, len(preds)))}}


def answer_text(tokenizer, user: str, prompt: str, answer: str) -> str:
    """The assistant turn as the chat template renders it after `prompt` (answer + end-of-turn
    marker), so the score covers what DPO trains; falls back to the bare answer when the full
    conversation does not start with the generation prompt."""
    full = tokenizer.apply_chat_template([{"role": "user", "content": user},
                                          {"role": "assistant", "content": answer}], tokenize=False)
    return full[len(prompt):] if full.startswith(prompt) else answer


# ---------------------------------------------------------------------------- declarations

@dataclass(frozen=True)
class Task:
    file: str                 # under data_dir/eval/
    fields: tuple[str, ...]   # required in every record
    run: Callable[[LM, list[dict], EvalConfig], dict]


TASKS: dict[str, Task] = {
    "cmexam": Task("cmexam.jsonl", ("id", "question", "options", "answer"), run_cmexam),
    "dialogue": Task("dialogue.jsonl", ("id", "question", "answer"), run_dialogue),
    "ppl_medical": Task("medical.jsonl", ("id", "text"), partial(run_ppl, name="medical")),
    "ppl_general": Task("general.jsonl", ("id", "text"), partial(run_ppl, name="general")),
    "preference": Task("preference.jsonl", ("id", "prompt", "chosen", "rejected"), run_preference),
}


def _read_task(eval_dir: Path, task: str, limit: int | None) -> list[dict]:
    t = TASKS[task]
    return _read_jsonl(eval_dir / t.file, t.fields, limit, _check_cmexam if task == "cmexam" else None)


def _check_cmexam(r: dict) -> tuple[str, str] | None:
    """(field, problem) of a CMExam record that no protocol can score, else None."""
    if not isinstance(r["options"], dict) or not r["options"]:
        return "options", "expected a non-empty mapping of letter -> text"
    if not r["answer"] or not set(r["answer"]) <= set(r["options"]):
        return "answer", f"{r['answer']!r} is not made of the option letters"
    return None


def _read_jsonl(path: Path, fields: tuple[str, ...] | list[str], limit: int | None = None,
                check: Callable[[dict], tuple[str, str] | None] | None = None) -> list[dict]:
    rows = []
    for i, r in iter_jsonl(path, "evaluation file"):
        if limit is not None and len(rows) >= limit:
            break
        for key in fields:
            if key not in r:
                raise InputError(path, i, key, "missing")
        problem = check(r) if check else None
        if problem:
            raise InputError(path, i, *problem)
        rows.append(r)
    return rows


def _finite(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x
