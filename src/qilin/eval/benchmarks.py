"""The multiple-choice benchmarks the three papers report besides CMExam / CMMLU (issue 17): CMB-Exam
(HuatuoGPT-II's headline), the C-Eval medical subjects (ChiMed-GPT, HuatuoGPT-II), MedQA (MCMLE,
USMLE), MedMCQA and the MMLU medical subjects. None is bundled: `qilin eval --data TASK=PATH` reads the
official files (formats below); tests use small self-written FORMAT fixtures, not benchmark items.

Protocols (docs/PROTOCOLS.md, "Benchmarks of issue 17"; upstream code read at the commits cited there):
- `cmb` (CMB's own): its zero-shot "answer only" query in the model's chat template, greedy, CMB's
  `match_choice` extraction (a single-answer question keeps the first letter), exact match; CMB's score:
  accuracy per (exam_type, exam_class), each exam_type the MEAN of its classes, overall the mean of the
  exam_type means.
- `ceval` (C-Eval's): "以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。" + k dev shots + the
  question + "答案："; the letter A-D with the highest log-prob (C-Eval's LLaMA evaluator reads the
  four letters' logits after the prompt); accuracy per subject.
- `mmlu` (MMLU's): "The following are multiple choice questions (with answers) about {subject}." (the
  subject words each preceded by a space, as format_subject writes them) + k dev shots + the question +
  "Answer:"; the option " A".." D" (with its leading space) of highest log-prob; accuracy over all
  questions (the official average) and per subject.
- `qilin-mc` (ours: MedQA and MedMCQA ship no language-model prompt): question, "A. text" lines and
  "答案：" (MCMLE) or "Answer:" (USMLE, MedMCQA); the letter of highest log-prob; accuracy.

Letters are scored as continuations (`LM.sequence_logprob`), so a letter that is several tokens in a
small tokenizer is still scored; where it is one token this is the next-token log-prob itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from qilin.errors import InputError, QilinError
from qilin.eval import metrics as M
from qilin.eval.choice import accuracy

CMB_QUERY = ("以下是中国{exam_type}中{exam_class}考试的一道{question_type}，不需要做任何分析和解释，直接输出答案选项。"
             "\n{question}\n{option_str}")
CEVAL_MEDICAL = {"clinical_medicine": "临床医学", "basic_medicine": "基础医学", "physician": "医师资格"}
MMLU_MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                "professional_medicine")
PROMPTS = {
    "cmb": CMB_QUERY.replace("\n", "\\n") + " in the chat template (user turn), zero-shot",
    "ceval": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\\n\\n[k dev shots: question\\nA. ..\\n答案：X\\n\\n]"
             "{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案： (raw prompt)",
    "mmlu": "The following are multiple choice questions (with answers) about {' ' + subject words}.\\n\\n[k dev shots "
            "ending 'Answer: X\\n\\n']{question}\\nA. {A}\\n...\\nAnswer: (raw prompt)",
    "qilin-mc": "{question}\\nA. {A}\\n...\\n答案： (Chinese) or Answer: (English) (raw prompt)",
}


# ------------------------------------------------------------------------------------ prompts

def cmb_prompt(row: dict) -> str:
    """CMB's zero-shot query (workers/base.py `query_prompt_2`): options of one character or none are
    left out, as CMB leaves out the empty options of its fixed A-E / A-G layout."""
    option_str = "\n".join(f"{k}. {v}" for k, v in row["options"].items() if len(v) > 1)
    return CMB_QUERY.format(exam_type=row["exam_type"], exam_class=row["exam_class"],
                            question_type=row["question_type"], question=row["question"], option_str=option_str)


def _mc_block(row: dict, answer_word: str) -> str:
    return row["question"] + "".join(f"\n{k}. {v}" for k, v in sorted(row["options"].items())) + f"\n{answer_word}"


def ceval_prompt(row: dict) -> str:
    head = f"以下是中国关于{CEVAL_MEDICAL[row['subject']]}考试的单项选择题，请选出其中的正确答案。\n\n"
    shots = "".join(_mc_block(s, "答案：") + s["answer"] + "\n\n" for s in row.get("shots", []))
    return head + shots + _mc_block(row, "答案：")


def mmlu_prompt(row: dict) -> str:
    subject = "".join(" " + w for w in row["subject"].split("_"))
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    shots = "".join(_mc_block(s, "Answer:") + f" {s['answer']}\n\n" for s in row.get("shots", []))
    return head + shots + _mc_block(row, "Answer:")


def qilin_mc_prompt(row: dict) -> str:
    chinese = re.search(r"[\u4e00-\u9fff]", row["question"]) is not None
    return _mc_block(row, "答案：" if chinese else "Answer:")


def cmb_match_choice(text: str) -> str:
    """CMB's `match_choice` (src/utils.py): the letters A-G in what follows 答案/正确选项 + 是/：/为/应该是/
    应该为, up to the first 。 or . ; else every letter A-G in the whole output."""
    letters = "ABCDEFG"
    m = re.search(r"(答案|正确选项)(?:是|：|为|应该是|应该为)(.*?)(。|\.|$)", text, re.S)
    return "".join(x for x in (m.group(2) if m else text) if x in letters)


def cmb_extract(text: str, question_type: str) -> str:
    """CMB's extract_ans with one answer per question: a single-answer question keeps the first letter."""
    choice = cmb_match_choice(text)
    return choice[0] if len(choice) > 1 and question_type != "多项选择题" else choice


PROMPT_OF = {"cmb-exam": cmb_prompt, "ceval-medical": ceval_prompt, "mmlu-medical": mmlu_prompt,
             "medqa-mcmle": qilin_mc_prompt, "medqa-usmle": qilin_mc_prompt, "medmcqa": qilin_mc_prompt}


# --------------------------------------------------------------------------------- prediction

def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """CMB-Exam: one greedy answer in the chat template, read by CMB's rule. The others: every option
    letter's log-prob after the raw prompt (MMLU: the letter with its leading space), highest wins."""
    prompts = [PROMPT_OF[task](r) for r in rows]
    proto = protocols[0]
    if task == "cmb-exam":
        from qilin.model.chat import prompt_text

        chat = [prompt_text(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        outputs = lm.generate(chat, cfg.new_tokens(task), cfg.batch_size)
        return [_line(task, proto, r, p, o, cmb_extract(o, r["question_type"])) for r, p, o in zip(rows, chat, outputs)]
    space = " " if task == "mmlu-medical" else ""
    pairs = [(i, k) for i, r in enumerate(rows) for k in sorted(r["options"])]
    scores = lm.sequence_logprob([prompts[i] for i, _ in pairs], [space + k for _, k in pairs], cfg.batch_size)
    own: list[dict] = [{} for _ in rows]
    for (i, k), (lp, _) in zip(pairs, scores):
        own[i][k] = lp
    return [{**_line(task, proto, r, p, None, max(lp, key=lp.get)), "logprobs": lp}
            for r, p, lp in zip(rows, prompts, own)]


def _line(task: str, protocol: str, r: dict, prompt: str, output: str | None, pred: str) -> dict:
    line = {"task": task, "protocol": protocol, "id": r["id"], "prompt": prompt, "options": r["options"],
            "output": output, "prediction": pred, "reference": r["answer"], "correct": pred == r["answer"],
            "n_options": len(r["options"]), "subject": r.get("subject", "-")}
    if task == "cmb-exam":
        line.update(exam_type=r["exam_type"], exam_class=r["exam_class"], question_type=r["question_type"])
    return line


# ------------------------------------------------------------------------------------ scoring

def score_cmb(lines: list[dict]) -> dict:
    """CMB's score.py: accuracy per (exam_type, exam_class); an exam_type's score is the mean of its
    classes'; `overall` the mean of the exam_type scores (the leaderboard's average)."""
    classes: dict[str, dict[str, list[bool]]] = {}
    for x in lines:
        classes.setdefault(x["exam_type"], {}).setdefault(x["exam_class"], []).append(bool(x["correct"]))
    out = {}
    for t, cs in classes.items():
        out[f"accuracy.{t}"] = {"value": M.mean([sum(v) / len(v) for v in cs.values()]),
                                "n": sum(len(v) for v in cs.values()), "classes": len(cs)}
    out["overall"] = {"value": M.mean([out[f"accuracy.{t}"]["value"] for t in classes]) if classes else None,
                      "n": len(lines), "exam_types": len(classes)}
    out["accuracy_micro"] = accuracy(lines)
    return out


def score_subjects(lines: list[dict]) -> dict:
    """Accuracy over all questions (with its interval; MMLU's official average), per subject, and the
    macro average over subjects."""
    by: dict[str, list[dict]] = {}
    for x in lines:
        by.setdefault(x["subject"], []).append(x)
    out = {"accuracy": accuracy(lines)}
    if len(by) > 1:
        out.update({f"accuracy.{s}": accuracy(v) for s, v in sorted(by.items())})
        out["accuracy_macro"] = {"value": M.mean([out[f"accuracy.{s}"]["value"] for s in by]), "n": len(lines)}
    return out
