"""THE task table: every benchmark declared once (its files, loader, prompt, protocols, predictor,
scorer, and the names its numbers take in a stage's metrics.json), as lm-evaluation-harness keeps
tasks as data. `qilin eval` and the evaluation after every stage of `qilin run` both go through
`results.evaluate` over this table, with one config (`EvalConfig`), so the same model and files give
the same numbers either way.

A predictor turns items into *prediction lines*, one per (item, protocol), each carrying the prompt,
the raw output and whatever its metric needs; a scorer turns the lines of one protocol into metrics
and reads nothing else, so every number can be recomputed from predictions/*.jsonl alone.

Protocols are METHODS.md section 4 and docs/PROTOCOLS.md: a protocol named after a paper or a
benchmark (`qilin-med`, `cmexam`, CMMLU's `generation`) is that project's own rule, checked against
its code in tests/eval/test_eval_parity_*.py; our own rules carry names of their own (`letter-run`,
`logits`, `char`, `mean`, `summed-logprob`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qilin.config import doc
from qilin.errors import QilinError
from qilin.eval import benchmark_loaders as bl
from qilin.eval import benchmarks, bias, choice, likelihood, loaders, multiturn, ner, probe, safety, text


@dataclass
class EvalConfig:
    """Everything besides model and data that decides the numbers (all of it lands in results.json)."""

    tasks: list[str] = doc("tasks to run; empty = every task whose held-out file the data stage wrote "
                           "(after a stage) / required (qilin eval)", [])
    protocols: list[str] = doc("protocols to run ('all' = every protocol of each task); each task runs those "
                               "it knows, else its defaults", [])
    limit: int | None = doc("at most this many items per task (the first ones; per subject for CMMLU); "
                            "None = all", None)
    limits: dict = doc("per-task item limits {task: n}, overriding `limit`", {})
    shots: int = doc("cmmlu-medical: shots from the subject's dev file (0 or 5 as published)", 0)
    batch_size: int = doc("prompts per forward / generate batch", 16)
    max_new_tokens: dict = doc("per-task new-token budget {task: n}; unset tasks use their protocol's own "
                               "(CMExam qilin-med: 50)", {})
    ppl_max_length: int = doc("window length in tokens for perplexity; longer texts are cut into windows "
                              "overlapping by one token", 512)
    seed: int = doc("seed of every random choice (CMMLU's random-letter fallback); decoding is greedy", 0)
    skip_bad: bool = doc("skip bad items, counted with the reason per item (default: a bad item is an error)",
                         False)
    judge: str | None = doc("OpenAI-compatible base URL of the LLM judges (CMB-Clin: the official score needs one; "
                            "safety)",
                            None)
    judge_template: str | None = doc("file with the CMB README's judge prompt (the official score: recognised by "
                                     "its SHA-256); none = our own rubric wording (cmb-clin-rubric)", None)
    judge_model: str = doc("model name sent to the judge endpoint", "gpt-4")
    rag: str | None = doc("a `qilin rag index` folder: each question gets its top passages first", None)
    rag_k: int = doc("passages per question with `rag` (Qilin-Med: 3)", 3)
    rag_mode: str = doc("retrieval with `rag`: bm25, dense or hybrid (as the index allows)", "bm25")
    rag_max_chars: int = doc("characters of passages at most, per question, with `rag`", 600)
    unigram_train: list[str] = doc("JSONL files with a 'text' field to fit the add-one unigram baseline "
                                   "reported beside perplexity; empty = no baseline", [])
    ner_shots: int = doc("ner: the first N records of the NER file are the demonstrations (earlier chat turns) "
                         "and are not evaluated", 3)
    data: dict = doc("after a stage: files {task: path} for the evaluation-only tasks the data stage does not "
                     "write (ner, dialogue-multiturn, bias, safety); unset = the data stage's file if it wrote "
                     "one, else the bundled demo split", {})

    def limit_for(self, task: str) -> int | None:
        return self.limits.get(task, self.limit)

    def new_tokens(self, task: str) -> int:
        return int(self.max_new_tokens.get(task) or TASKS[task].max_new_tokens)


@dataclass(frozen=True)
class Protocol:
    extraction: str   # how a prediction is read from the model (or "-" for scoring protocols)
    metric: str       # the metric and its variant
    flat: str         # its metrics' names in a stage's metrics.json: "{}" takes the metric's name


@dataclass(frozen=True)
class Task:
    heldout: str | None  # the data stage's held-out file, under <data stage>/eval/ (None: qilin eval --data only)
    demo: str           # the bundled demo split, under data/ (qilin eval without --data)
    load: Callable      # (path, cfg, task) -> items
    predict: Callable   # (task, lm, rows, protocols, cfg) -> prediction lines
    score: Callable     # lines of ONE protocol -> {metric: {"value", "n", ...}}
    protocols: dict[str, Protocol]
    default: tuple[str, ...]
    prompt: str
    max_new_tokens: int = 0
    rag_field: str | None = None   # the field that carries the question (None: retrieval leaves it alone)
    shots_allowed: bool = False
    standalone: bool = False       # evaluation-only: after a stage, eval.data[task] or the bundled demo
                                   # when the data stage wrote no held-out file for it


_CHAR = ("characters, whitespace removed; corpus BLEU-1..4 cumulative, no smoothing; ROUGE-1/2/L F1 (n-gram "
         "counts, LCS for L) per {unit} averaged; Distinct-1/2; x100")
_QM_TEXT = ("qilin-med variant: BLEU-1..4 on jieba words, cumulative, no smoothing; ROUGE-1/2 F1 on sets of "
            "unique character n-grams, per {unit} averaged; x100")
_JUDGE_PENDING = "the official CMB-Clin score was NOT computed (it needs --judge and the official judge prompt)"

_LETTER = "the option letter ({letters}) with the highest log-prob after the prompt, scored as a continuation"
_SUBJECTS = "accuracy over all questions (95% Wilson interval), per subject, macro over subjects"
_CMB_EXTRACTION = ("CMB match_choice: the letters A-G after 答案/正确选项+是/：/为/应该是/应该为 up to 。/. , else every A-G "
                   "letter of the output; a single-answer question keeps the first")
_CMB_METRIC = ("CMB score.py: exact match; accuracy per (exam_type, exam_class), exam_type = mean of its classes, "
               "overall = mean of the exam_type scores")

def _perplexity(where: str, heldout: str, demo: str, prompt: str) -> Task:
    """A perplexity task: the medical and the general one differ only in their files and names."""
    return Task(heldout, demo, loaders.load_text, likelihood.predict_ppl, likelihood.score_ppl,
                {"token-nll": Protocol("-", "perplexity = exp(token-weighted mean NLL); every token after a text's "
                                       "first, no EOS; beside it the add-one unigram baseline when fit",
                                       f"ppl.{where}{{}}")},
                ("token-nll",), prompt)


TASKS: dict[str, Task] = {
    "cmexam": Task(
        "cmexam.jsonl", "cmexam/val.csv", loaders.load_cmexam, choice.predict, choice.score_cmexam,
        {"qilin-med": Protocol(choice.EXTRACTION["qilin-med"], "exact match with Answer (multi-answer: whole string)",
                               "cmexam.{}"),
         "cmexam": Protocol(choice.EXTRACTION["cmexam"], "exact match; weighted P/R/F1 over answer strings "
                            "(sklearn average='weighted')", "cmexam.{}_cmexam"),
         "letter-run": Protocol(choice.EXTRACTION["letter-run"], "exact match (qilin's own rule)",
                                "cmexam.{}_letter_run"),
         "first-line-union": Protocol(choice.EXTRACTION["first-line-union"], "exact match (qilin's own rule)",
                                      "cmexam.{}_first_line_union"),
         "logits": Protocol(choice.EXTRACTION["logits"], "exact match; can only produce one letter, so "
                            "accuracy_single (single-answer questions) is its fair number", "cmexam.{}_logits")},
        ("qilin-med", "cmexam", "logits"), choice.CMEXAM_PROMPT_TEXT, 50, "question"),
    "cmmlu-medical": Task(
        "cmmlu.jsonl", "cmmlu_medical/dev", loaders.load_cmmlu, choice.predict, choice.score_cmmlu,
        {"logits": Protocol(choice.EXTRACTION["logits"] + " (CMMLU's default mode)", "accuracy per subject; macro "
                            "(official) and micro averages; CMMLU-Med = macro over its 7 subjects", "cmmlu.{}"),
         "extract-choice": Protocol(choice.EXTRACTION["extract-choice"], "as logits; random_fallbacks counts "
                                    "the guesses", "cmmlu.{}_extract_choice"),
         "choice-patterns": Protocol(choice.EXTRACTION["choice-patterns"], "as logits", "cmmlu.{}_choice_patterns")},
        ("logits",), choice.CMMLU_PROMPT_TEXT, 50, "question", shots_allowed=True),
    "cmb-clin": Task(
        "cmb_clin.jsonl", "cmb_clin/CMB-Clin-qa.json", loaders.load_cmb_clin, text.predict, text.score,
        {"char": Protocol("whole answer, stripped", _CHAR.format(unit="turn") + "; " + _JUDGE_PENDING,
                          "cmb_clin.{}"),
         "qilin-med": Protocol("whole answer, stripped", _QM_TEXT.format(unit="turn") + "; " + _JUDGE_PENDING,
                               "cmb_clin.qilinmed.{}"),
         "cmb-clin-judge": Protocol("whole answer", "the official CMB-Clin score: an LLM judge (temperature 0) "
                                    "with the CMB README's prompt verbatim (checked by SHA-256) rates fluency, "
                                    "relevance, completeness, medical proficiency 1-5; mean per criterion",
                                    "cmb_clin.judge.{}"),
         "cmb-clin-rubric": Protocol("whole answer", "ours: an LLM judge (temperature 0) with our wording of the CMB "
                                     "rubric (same criteria, 1-5 scales, inputs); NOT the official score",
                                     "cmb_clin.rubric.{}"),
         "cmb-clin-judge-custom": Protocol("whole answer", "a user's judge prompt (not the official text); NOT the "
                                           "official score", "cmb_clin.judge_custom.{}")},
        ("char", "qilin-med"), text.CMB_CLIN_PROMPT_TEXT, 256),
    "dialogue": Task(
        "dialogue.jsonl", "toyhom_dialogue_im/im_sample_6644.csv", loaders.load_dialogue, text.predict, text.score,
        {"char": Protocol("whole answer, stripped", _CHAR.format(unit="example"), "dialogue.{}"),
         "qilin-med": Protocol("whole answer, stripped", _QM_TEXT.format(unit="example"), "dialogue.qilinmed.{}")},
        ("char", "qilin-med"), "chat template, user = question, zero-shot", 128, "question"),
    "ppl-medical": _perplexity("medical", "medical.jsonl", "medicalgpt_samples/infectious_disease_textbook.txt",
                               "the raw text, one item per non-empty line (or JSONL 'text')"),
    "ppl-general": _perplexity("general", "general.jsonl", "medicalgpt_samples/general_dpo_zh_500.jsonl",
                               "the raw text (JSONL 'text', or prompt + chosen answer of a preference file)"),
    "preference": Task(
        "preference.jsonl", "medicalgpt_samples/medical_reward_pairs_100.jsonl", loaders.load_preference,
        likelihood.predict_preference, likelihood.score_preference,
        {"mean": Protocol("-", "share of pairs whose chosen answer has the higher per-token MEAN log-prob "
                          "(length-normalised; no reference model); ties wrong", "preference.{}"),
         "summed-logprob": Protocol("-", "share of pairs whose chosen answer has the higher SUMMED log-prob: "
                                    "length-sensitive (the shorter answer tends to win); no reference model; "
                                    "ties wrong", "preference.{}_summed")},
        ("mean",), "chat template (earlier turns, user = prompt, assistant = answer incl. end of turn)",
        rag_field="prompt"),
    "ner": Task(
        "ner.jsonl", "ner/ccks2019_format_sample.jsonl", ner.load_ner, ner.predict, ner.score,
        {"type-lines": Protocol(ner.PARSE_RULE, ner.METRIC, "ner.{}")},
        ("type-lines",), ner.PROMPT_TEXT, 128, standalone=True),
    "dialogue-multiturn": Task(
        "dialogue_multiturn.jsonl", "meddialog/meddialog_format_sample.json", multiturn.load_multiturn,
        multiturn.predict, multiturn.score,
        {"char": Protocol("whole answer, stripped", _CHAR.format(unit="doctor turn") + "; also per turn position "
                          "(_turn1.._turn4, _turn5plus)", "dialogue_multiturn.{}"),
         "qilin-med": Protocol("whole answer, stripped", _QM_TEXT.format(unit="doctor turn") + "; also per turn "
                               "position (_turn1.._turn4, _turn5plus)", "dialogue_multiturn.qilinmed.{}")},
        ("char", "qilin-med"), multiturn.PROMPT_TEXT, 96, standalone=True),
    "bias": Task(
        "bias.json", "bias/demo_attitudes.json", bias.load_bias, bias.predict, bias.score,
        {"likert": Protocol(bias.LIKERT_RULE, bias.METRIC, "bias.{}")},
        ("likert",), bias.PROMPT_TEXT, 8, standalone=True),
    "safety": Task(
        "safety.jsonl", "safety/safety_prompts_format_sample.json", safety.load_safety, safety.predict, safety.score,
        {"refusal-rules": Protocol("whole answer, stripped", "OUR OWN rule-based judge: " + safety.RULES_TEXT +
                                   "; safe = refuse or redirect; rates with Wilson 95% intervals", "safety.{}"),
         safety.JUDGE: Protocol("whole answer, stripped", "OUR OWN: an LLM judge labels each answer refuse / "
                                "redirect / comply (eval/safety.py JUDGE_PROMPT); safe = not comply; unparsed replies "
                                "counted", "safety.judge.{}")},
        ("refusal-rules",), safety.PROMPT_TEXT, 96, standalone=True),
    # knowledge probes (issue 17): seen / paraphrase / unseen facts, cloze log-prob + multiple choice
    "probe": Task(
        "probe.jsonl", "fictional/probe_demo.jsonl", probe.load, probe.predict, probe.score,
        {probe.PROTOCOL: Protocol(probe.EXTRACTION, probe.METRIC, "probe.{}")},
        (probe.PROTOCOL,), probe.PROMPT),
    # benchmarks of issue 17 (qilin.eval.benchmarks): not bundled, read from the user's official files
    "cmb-exam": Task(
        None, "cmb_exam (not bundled)", bl.load_cmb, benchmarks.predict, benchmarks.score_cmb,
        {"cmb": Protocol(_CMB_EXTRACTION, _CMB_METRIC, "cmb_exam.{}")}, ("cmb",), benchmarks.PROMPTS["cmb"], 20),
    "ceval-medical": Task(
        None, "ceval (not bundled)", bl.load_ceval, benchmarks.predict, benchmarks.score_subjects,
        {"ceval": Protocol(_LETTER.format(letters="A-D"), _SUBJECTS, "ceval_medical.{}")}, ("ceval",),
        benchmarks.PROMPTS["ceval"], shots_allowed=True),
    "mmlu-medical": Task(
        None, "mmlu (not bundled)", bl.load_mmlu, benchmarks.predict, benchmarks.score_subjects,
        {"mmlu": Protocol(_LETTER.format(letters="' A'-' D' (leading space)"), _SUBJECTS + " (MMLU's official "
                          "average is `accuracy`, over all questions)", "mmlu_medical.{}")}, ("mmlu",),
        benchmarks.PROMPTS["mmlu"], shots_allowed=True),
    **{name: Task(
        None, f"{name} (not bundled)", load, benchmarks.predict, benchmarks.score_subjects,
        {"qilin-mc": Protocol(_LETTER.format(letters="of the options"), "accuracy (qilin's own prompt: the benchmark "
                              "ships no language-model prompt)", f"{name.replace('-', '_')}.{{}}")}, ("qilin-mc",),
        benchmarks.PROMPTS["qilin-mc"])
       for name, load in (("medqa-mcmle", bl.load_medqa), ("medqa-usmle", bl.load_medqa), ("medmcqa", bl.load_medmcqa))},
}


JUDGES = text.JUDGES


def flat_name(task: str, protocol: str, metric: str) -> str:
    """A metric's name in a stage's metrics.json (e.g. cmexam / logits / accuracy -> cmexam.accuracy_logits)."""
    if task.startswith("ppl-"):  # perplexity -> ppl.medical, nll -> ppl.medical_nll, unigram -> ppl.unigram_medical
        where = task.removeprefix("ppl-")
        return {"perplexity": f"ppl.{where}", "nll": f"ppl.{where}_nll",
                "unigram_perplexity": f"ppl.unigram_{where}"}.get(metric, f"ppl.{where}.{metric}")
    return TASKS[task].protocols[protocol].flat.format(metric)


def choose_protocols(tasks: list[str], asked: list[str] | None, judge: str | None = None) -> dict[str, list[str]]:
    """Each task's protocols: those asked that it knows (all of its own with 'all'), else its defaults;
    `judge` (the judge protocol that the endpoint and template make, e.g. cmb-clin-rubric) is added
    to CMB-Clin; judge protocols are never run without an endpoint."""
    known = {p for t in tasks for p in TASKS[t].protocols}
    for p in asked or []:
        if p != "all" and p not in known:
            raise QilinError(f"protocol {p}: none of the tasks {', '.join(tasks)} has it; "
                             f"known: {', '.join(sorted(known))}")
    out = {}
    for t in tasks:
        own = list(TASKS[t].protocols)
        picked = own if asked and "all" in asked else [p for p in own if p in (asked or [])]
        out[t] = [p for p in picked if p not in JUDGES and p != safety.JUDGE] or list(TASKS[t].default)
        if judge and judge in own:
            out[t].append(judge)
        if judge and safety.JUDGE in own:  # an endpoint given: safety's own LLM judge runs too
            out[t].append(safety.JUDGE)
    return out


def check_config(cfg: EvalConfig, where: str = "eval") -> None:
    """What a recipe can check of an evaluation before anything runs (the tasks, their protocols, the
    numbers), so that a mistake in the last stage's evaluation does not surface after the training.
    Tasks unset = every task with a held-out set (which of them the data stage writes is known later)."""
    tasks = list(cfg.tasks) or [t for t, task in TASKS.items() if task.heldout]
    try:
        check_tasks(tasks, cfg)
        choose_protocols(tasks, cfg.protocols)
    except QilinError as e:
        raise QilinError(f"{where}: {e}") from None


def for_tasks(merged: dict, own: dict) -> dict:
    """An evaluation that takes the recipe's options with some of its own (`own`, e.g. the rag stage's
    shorter task list), already `merged`: protocols it did not choose itself are kept only where one of
    its tasks has them (the recipe's `mean` is preference's; a rag evaluation without preference drops it)."""
    tasks = merged.get("tasks") or []
    if "protocols" in own or not tasks or not merged.get("protocols") or any(t not in TASKS for t in tasks):
        return merged
    mine = {p for t in tasks for p in TASKS[t].protocols}
    return merged | {"protocols": [p for p in merged["protocols"] if p == "all" or p in mine]}


def check_tasks(tasks: list[str], cfg: EvalConfig) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise QilinError(f"unknown task {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if not isinstance(cfg.ner_shots, int) or cfg.ner_shots < 0:
        raise QilinError(f"eval ner_shots {cfg.ner_shots!r}: must be a whole number >= 0")
    if cfg.shots and not any(TASKS[t].shots_allowed for t in tasks):
        raise QilinError(f"shots {cfg.shots}: only " + ", ".join(t for t in TASKS if TASKS[t].shots_allowed)
                         + " take shots (the others are zero-shot)")
    for name in ("batch_size", "ppl_max_length", "rag_k"):
        if getattr(cfg, name) < 1:
            raise QilinError(f"eval {name} {getattr(cfg, name)}: must be positive")
    for name, value in [("limit", cfg.limit), *[(f"limits.{t}", n) for t, n in cfg.limits.items()],
                        *[(f"max_new_tokens.{t}", n) for t, n in cfg.max_new_tokens.items()], ("shots", cfg.shots)]:
        if value is not None and (not isinstance(value, int) or value < (0 if name == "shots" else 1)):
            raise QilinError(f"eval {name} {value!r}: must be a positive whole number")


def describe(task: str, protocol: str, cfg: EvalConfig) -> dict:
    """The protocol in full, as results.json carries it."""
    from qilin.model.runtime import GREEDY

    t = TASKS[task]
    generates = protocol not in ("logits", "token-nll", "mean", "summed-logprob", "option-logprob", "ceval", "mmlu",
                                 "qilin-mc")
    if protocol in JUDGES:
        out_judge = {"url": cfg.judge, "model": cfg.judge_model, "temperature": 0, "template": cfg.judge_template}
    shots = cfg.shots if t.shots_allowed else cfg.ner_shots if task == "ner" else 0
    out = {
        "prompt_template": t.prompt,
        "shots": shots,
        "shot_selection": (("the first records of the file, not evaluated" if task == "ner" else choice.SHOT_SELECTION)
                           if shots else "zero-shot"),
        "seed": cfg.seed,
        "decoding": ({"method": GREEDY.describe(), "max_new_tokens": cfg.new_tokens(task),
                      "batch_size": cfg.batch_size, "padding": "left", "kv_cache": True} if generates else
                     {"method": "single forward pass per item (no sampling)", "batch_size": cfg.batch_size}
                     | ({"window": cfg.ppl_max_length} if protocol == "token-nll" else {})),
        "extraction": t.protocols[protocol].extraction,
        "metric_variant": t.protocols[protocol].metric,
    }
    if protocol in JUDGES:
        out["judge"] = out_judge
    if protocol == safety.JUDGE:
        out["judge"] = {"url": cfg.judge, "model": cfg.judge_model, "temperature": 0,
                        "prompt": "qilin.eval.safety.JUDGE_PROMPT (ours)"}
    if cfg.rag and t.rag_field:
        out["retrieval"] = (f"top-{cfg.rag_k} {cfg.rag_mode} passages from {cfg.rag} placed before the "
                            f"{t.rag_field} (qilin.rag.prompt, at most {cfg.rag_max_chars} characters)")
    return out


def one_line(d: dict, protocol: str) -> str:
    """A protocol as one line of text (metrics.json, the report, `qilin eval show`)."""
    dec = d["decoding"]
    parts = [f"{protocol}: prompt {d['prompt_template']}", f"{d['shots']}-shot" if d["shots"] else "zero-shot",
             dec["method"] + (f", {dec['max_new_tokens']} new tokens" if "max_new_tokens" in dec else ""),
             f"extraction: {d['extraction']}", f"metric: {d['metric_variant']}"]
    if "retrieval" in d:
        parts.insert(0, "with retrieval: " + d["retrieval"])
    return "; ".join(parts)


def bundled(task: str) -> Path:
    path = loaders.BUNDLED / TASKS[task].demo
    if not path.exists():
        raise QilinError(f"{task}: the bundled demo split {path} is not here (installed without the repository's "
                         f"data/); pass --data {task}=PATH")
    return path
