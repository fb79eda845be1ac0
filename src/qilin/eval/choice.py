"""Multiple-choice tasks (CMExam, CMMLU medical subjects): prompts, predictions under every
protocol, and their scores.

One generation pass serves every generation protocol (they differ only in how a letter is read from
the same raw output), and one forward pass per question serves `logits`. Every prediction line keeps
the prompt, the raw output and the options, so each extraction can be re-run on it.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from qilin.errors import QilinError
from qilin.eval import extract
from qilin.eval import metrics as M

CMEXAM_PROMPT = "{question}\n{options}\n答案："
CMMLU_PROMPT_TEXT = extract.CMMLU_PROMPT_TEXT
SHOT_SELECTION = ("first N questions of the subject's dev file, never the evaluated question itself "
                  "(lm-evaluation-harness first_n); shots dropped from the end while the prompt exceeds "
                  f"{extract.CMMLU_MAX_PROMPT_TOKENS} tokens (CMMLU's rule)")

EXTRACTION = {
    "qilin-med": extract.QILIN_MED_EXTRACTION,
    "cmexam": extract.CMEXAM_EXTRACTION,
    "letter-run": extract.LETTER_RUN_EXTRACTION,
    "generation": extract.CMMLU_EXTRACTION,
    "logits": "the option letter (among this question's) with the highest next-token log-prob after the prompt; "
              "one forward pass",
}


def cmexam_prompt(row: dict) -> str:
    opts = "\n".join(f"{k} {v}" for k, v in sorted(row["options"].items()))
    return CMEXAM_PROMPT.format(question=row["question"], options=opts)


def prompt(task: str, row: dict, count_tokens: Callable[[str], int]) -> str:
    if task == "cmexam":
        return cmexam_prompt(row)
    from qilin.eval.loaders import MEDICAL_SUBJECTS

    return extract.cmmlu_prompt(MEDICAL_SUBJECTS[row["subject"]], row.get("shots", []), row, count_tokens)


def _extract(protocol: str, output: str, row: dict, rng: random.Random) -> tuple[str, bool]:
    """(prediction, whether it is a random fallback) of a generation protocol."""
    if protocol == "qilin-med":
        return extract.qilin_med_extract_cot_answer(output, row["options"]), False
    if protocol == "cmexam":
        return extract.cmexam_parse_options(output, row["options"]), False
    if protocol == "letter-run":
        return extract.first_letter_run(output, "".join(sorted(row["options"]))), False
    if protocol == "generation":
        return extract.cmmlu_extract_choice(output, "".join(sorted(row["options"])), rng)
    raise QilinError(f"no extraction rule for protocol {protocol}")


def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """Prediction lines of a multiple-choice task for each protocol."""
    count = lambda s: len(lm.encode(s))  # noqa: E731  (CMMLU drops shots past its token limit)
    prompts = [prompt(task, r, count) for r in rows]
    lines = []
    gen_protocols = [p for p in protocols if p != "logits"]
    if gen_protocols:
        outputs = lm.generate(prompts, cfg.new_tokens(task), cfg.batch_size)
        for proto in gen_protocols:
            rng = random.Random(cfg.seed)  # CMMLU's random fallback, seeded per protocol run
            for r, p, o in zip(rows, prompts, outputs):
                pred, fallback = _extract(proto, o, r, rng)
                lines.append(_line(task, proto, r, p, o, pred) | ({"random_fallback": True} if fallback else {}))
    if "logits" in protocols:
        letters = sorted({k for r in rows for k in r["options"]})
        ids = [single_token(lm, k) for k in letters]
        groups = [r.get("subject") for r in rows]  # CMMLU: a subject's prompts share instruction + shots
        for r, p, lp in zip(rows, prompts, lm.next_token_logprobs(prompts, ids, cfg.batch_size, groups)):
            own = {k: v for k, v in zip(letters, lp) if k in r["options"]}
            lines.append({**_line(task, "logits", r, p, None, max(own, key=own.get)), "logprobs": own})
    return lines


def _line(task: str, protocol: str, r: dict, prompt_: str, output: str | None, pred: str) -> dict:
    line = {"task": task, "protocol": protocol, "id": r["id"], "prompt": prompt_, "options": r["options"],
            "output": output, "prediction": pred, "reference": r["answer"], "correct": pred == r["answer"],
            "n_options": len(r["options"])}
    if "subject" in r:
        line["subject"] = r["subject"]
    return line


def single_token(lm, letter: str) -> int:
    ids = lm.tokenizer(letter, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise QilinError(f"option letter {letter!r} is {len(ids)} tokens in this tokenizer; the logits protocol needs one")
    return ids[0]


# ---------------------------------------------------------------------------------- scoring

def accuracy(lines: list[dict]) -> dict:
    k = sum(bool(x["correct"]) for x in lines)
    n = len(lines)
    return {"value": k / n if n else None, "n": n, "ci95": list(M.binomial_ci(k, n))}


def score_cmexam(lines: list[dict]) -> dict:
    """Accuracy on all, single- and multi-answer questions; the chance, majority-answer and shuffled
    references; weighted P/R/F1 (the CMExam scorer's) under `cmexam`."""
    single = [x for x in lines if len(x["reference"]) == 1]
    out = {"accuracy": accuracy(lines), "accuracy_single": accuracy(single),
           "accuracy_multi": accuracy([x for x in lines if len(x["reference"]) > 1]),
           "chance": {"value": M.mean([1 / x["n_options"] for x in single]) if single else None, "n": len(single)},
           **letter_preference(lines)}
    if lines and lines[0]["protocol"] == "cmexam":
        prf = M.weighted_prf([x["reference"] for x in lines], [x["prediction"] for x in lines])
        out.update({f"{k}_weighted": {"value": v, "n": len(lines)} for k, v in prf.items()})
    return out


def letter_preference(lines: list[dict]) -> dict:
    """A small model often answers one letter to everything; where the answer key is not balanced that
    alone moves accuracy away from chance. `majority`: always giving the most frequent reference
    answer; `shuffled`: the expected accuracy of the model's own answers shuffled across questions
    (what its preference among letters scores without reading the questions)."""
    n = len(lines)
    refs, answers = Counter(x["reference"] for x in lines), Counter(x["prediction"] for x in lines)
    return {"majority": {"value": max(refs.values()) / n if n else None, "n": n},
            "shuffled": {"value": sum(k * refs[a] for a, k in answers.items()) / n ** 2 if n else None, "n": n}}


def score_cmmlu(lines: list[dict]) -> dict:
    """Per-subject accuracy, macro (the official average) and micro over the subjects present, and
    CMMLU-Med (macro over its 7 subjects; null unless all 7 are present)."""
    from qilin.eval.loaders import CMMLU_MED

    by: dict[str, list[dict]] = {}
    for x in lines:
        by.setdefault(x["subject"], []).append(x)
    out = {f"accuracy.{sub}": accuracy(items) for sub, items in sorted(by.items())}
    accs = [out[f"accuracy.{sub}"]["value"] for sub in sorted(by)]
    out["accuracy_macro"] = {"value": M.mean(accs) if accs else None, "n": len(lines), "subjects": len(by)}
    out["accuracy_micro"] = accuracy(lines)
    med = [out[f"accuracy.{sub}"]["value"] for sub in CMMLU_MED if sub in by]
    out["cmmlu_med"] = {"value": M.mean(med) if len(med) == len(CMMLU_MED) else None,
                        "n": sum(len(by[sub]) for sub in CMMLU_MED if sub in by), "subjects": len(med)}
    if lines and lines[0]["protocol"] == "generation":
        out["random_fallbacks"] = {"value": sum(bool(x.get("random_fallback")) for x in lines), "n": len(lines)}
    return out
