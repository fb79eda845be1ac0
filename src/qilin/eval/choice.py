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
from qilin.eval import extract, prompts
from qilin.eval import metrics as M

CMEXAM_PROMPT_TEXT = "{Question}\n{A text\nB text...}\n答案： (Qilin-Med's CMExam prompt, raw, options in file order)"
CMMLU_PROMPT_TEXT = ("CMMLU's gen_prompt, raw: 以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
                     "[shots: 题目：...\nA. ...\n答案是：X\n\n] 题目：{question}\nA. {A}\n...\n答案是：")
SHOT_SELECTION = ("the first N questions of the subject's dev file, never the evaluated question itself; while the "
                  f"prompt reaches {prompts.CMMLU_MAX_LENGTH} tokens every shot of the greatest length is dropped "
                  "(CMMLU's gen_prompt rule)")

EXTRACTION = {
    "qilin-med": extract.QILIN_MED_EXTRACTION,
    "cmexam": extract.CMEXAM_EXTRACTION,
    "letter-run": extract.LETTER_RUN_EXTRACTION,
    "first-line-union": extract.FIRST_LINE_UNION_EXTRACTION,
    "extract-choice": extract.CMMLU_EXTRACTION,
    "choice-patterns": extract.CHOICE_PATTERNS_EXTRACTION,
    "logits": "the option letter (among this question's) with the highest next-token log-prob after the prompt; "
              "one forward pass",
}


def prompt(task: str, row: dict, count_tokens: Callable[[str], int]) -> str:
    if task == "cmexam":
        return prompts.qilin_med_cmexam_prompt(row)
    from qilin.eval.loaders import MEDICAL_SUBJECTS

    return prompts.cmmlu_prompt(MEDICAL_SUBJECTS[row["subject"]], row.get("shots", []), row, count_tokens)[0]


def _extract(protocol: str, output: str, row: dict, rng: random.Random) -> tuple[str, bool]:
    """(prediction, whether it is a random fallback) of a generation protocol. Both upstream CMExam
    pipelines strip the decoded output before extracting; CMMLU's removes newlines itself."""
    letters = "".join(sorted(row["options"]))
    if protocol == "qilin-med":
        return extract.qilin_med_extract_cot_answer(output.strip(), row["options"]), False
    if protocol == "cmexam":
        return extract.cmexam_parse_options(output.strip(), row["options"]), False
    if protocol == "letter-run":
        return extract.letter_run(output, letters), False
    if protocol == "first-line-union":
        return extract.first_line_union(output, row["options"]), False
    if protocol == "extract-choice":
        return extract.cmmlu_generation_answer(output, letters, rng)
    if protocol == "choice-patterns":
        return extract.choice_patterns(output, letters), False
    raise QilinError(f"no extraction rule for protocol {protocol}")


def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """Prediction lines of a multiple-choice task for each protocol."""
    count = prompts.hf_token_counter(lm.tokenizer)  # CMMLU drops shots past its token limit, counted its way
    texts = [prompt(task, r, count) for r in rows]
    lines = []
    gen_protocols = [p for p in protocols if p != "logits"]
    if gen_protocols:
        outputs = lm.generate(texts, cfg.new_tokens(task), cfg.batch_size)
        for proto in gen_protocols:
            rng = random.Random(cfg.seed)  # CMMLU's random fallback, seeded per protocol run
            for r, p, o in zip(rows, texts, outputs):
                pred, fallback = _extract(proto, o, r, rng)
                lines.append(_line(task, proto, r, p, o, pred) | ({"random_fallback": True} if fallback else {}))
    if "logits" in protocols:
        letters = sorted({k for r in rows for k in r["options"]})
        ids = [single_token(lm, k) for k in letters]
        groups = [r.get("subject") for r in rows]  # CMMLU: a subject's prompts share instruction + shots
        for r, p, lp in zip(rows, texts, lm.next_token_logprobs(texts, ids, cfg.batch_size, groups)):
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
    if lines and lines[0]["protocol"] == "extract-choice":
        out["random_fallbacks"] = {"value": sum(bool(x.get("random_fallback")) for x in lines), "n": len(lines)}
    return out
