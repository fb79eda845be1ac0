"""The benchmarks of `qilin eval`: each task is a small declaration (bundled demo file, protocols,
loader, predictor, scorer) in `TASKS`, as lm-evaluation-harness keeps tasks as data.

A predictor turns items into *prediction lines*, one per (item, protocol), each carrying what its
metric needs (`prediction`, `reference`, `correct`, per-item `scores`, log-probabilities ...). A
scorer turns the lines of one protocol into metrics and uses nothing else, so every number in
results.json can be recomputed from predictions/*.jsonl alone (`results.recompute`).

Protocols are METHODS.md section 4; `describe` writes each one out in full (prompt template, shots
and how they were drawn, decoding, extraction rule, metric variant).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qilin.errors import InputError, QilinError
from qilin.eval import metrics as M
from qilin.eval.extract import cmexam_official, cmmlu_choice, first_letter_run
from qilin.eval.lm import LM, chat_prompt
from qilin.eval.suite import _single_token, answer_text, cmexam_prompt

# Where the bundled demo splits live (repository checkout, editable install).
BUNDLED = Path(__file__).resolve().parents[3] / "data"

# CMMLU's 11 medical subjects (file stem -> the Chinese name its official prompt uses).
MEDICAL_SUBJECTS = {
    "anatomy": "解剖学", "clinical_knowledge": "临床知识", "college_medicine": "大学医学",
    "genetics": "遗传学", "nutrition": "营养学", "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学", "professional_medicine": "专业医学",
    "college_medical_statistics": "大学医学统计", "human_sexuality": "人类性行为", "food_science": "食品科学",
}
# The 7 subjects of the common "CMMLU-Med" aggregate (METHODS.md 4): macro average over these.
CMMLU_MED = ("anatomy", "clinical_knowledge", "college_medicine", "genetics", "nutrition",
             "traditional_chinese_medicine", "virology")

CMMLU_DESCRIPTION = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
CMMLU_ITEM = "题目：{question}\n{options}\n答案是："
CLIN_CRITERIA = ("fluency", "relevance", "completeness", "proficiency")


@dataclass
class Settings:
    """Everything besides model and data that decides the numbers (all written to results.json)."""

    protocols: list[str] | None = None   # None: each task's defaults
    shots: int = 0
    limit: int | None = None
    batch_size: int = 16
    max_new_tokens: int | None = None    # None: each task's default
    seed: int = 0
    skip_bad: bool = False
    judge: str | None = None             # OpenAI-compatible base URL for the CMB-Clin judge
    judge_model: str = "gpt-4"
    rag: str | None = None               # index folder: questions carry their retrieved passages (qilin.rag)
    rag_k: int = 3                       # passages per question with --rag
    skipped: dict = field(default_factory=dict)  # filled by the loaders: task -> messages


# ------------------------------------------------------------------------------------ loading

def read_items(reader: Callable, path: Path, task: str, settings: Settings, limit: int | None = None) -> list[dict]:
    """Records from a qilin reader; a bad record raises (naming file, line, field), or with
    --skip-bad is counted with its reason in `settings.skipped[task]`."""
    skipped = settings.skipped.setdefault(task, [])
    on_error = "skip" if settings.skip_bad else "raise"
    try:
        rows = list(itertools.islice(reader(path, on_error=on_error, skipped=skipped), limit))
    except InputError as e:
        if e.line is None:
            raise
        raise InputError(e.path, e.line, e.field, f"{e.reason} (--skip-bad skips such items)") from None
    if not rows:
        raise InputError(path, None, None, f"no usable items ({len(skipped)} skipped)")
    return rows


def load_cmexam(path: Path, s: Settings) -> list[dict]:
    from qilin.data.readers import read_cmexam

    return read_items(read_cmexam, path, "cmexam", s, s.limit)


def load_cmmlu(path: Path, s: Settings) -> list[dict]:
    """The medical subjects of a CMMLU folder (`test/` or `dev/`, or one holding both), or one
    subject CSV. Shots come from the sibling `dev/` folder; when the evaluated folder IS dev (the
    bundled demo), an item never serves as its own shot. --limit applies per subject."""
    from qilin.data.readers import read_cmmlu

    test_dir = path / "test" if (path / "test").is_dir() else path
    files = [test_dir] if test_dir.is_file() else sorted(
        f for f in test_dir.glob("*.csv") if f.stem in MEDICAL_SUBJECTS)
    if not files:
        raise InputError(path, None, None, "no CMMLU medical subject files (" + ", ".join(MEDICAL_SUBJECTS) + ")")
    _same_header(files)
    dev_dir = test_dir.parent / "dev" if test_dir.is_dir() else test_dir.parent.parent / "dev"
    rows = []
    for f in files:
        items = read_items(read_cmmlu, f, "cmmlu-medical", s, s.limit)
        shots = []
        if s.shots:
            dev = dev_dir / f.name
            if not dev.is_file():
                raise InputError(dev, None, None, f"{s.shots}-shot needs the subject's dev file here")
            shots = list(read_cmmlu(dev))
        same = dev_dir.resolve() == f.parent.resolve()
        for r in items:
            pool = [d for d in shots if not (same and d["id"] == r["id"])]
            if len(pool) < s.shots:
                why = " (the evaluated file is the dev file itself, so an item's own row is left out)" if same else ""
                raise QilinError(f"{f}: {s.shots}-shot needs {s.shots} dev questions, {len(pool)} available{why}")
            r["shots"], r["shots_from_self"] = pool[:s.shots], same
        rows += items
    return rows


def _same_header(files: list[Path]) -> None:
    from qilin.data.readers import _csv_header

    first = _csv_header(files[0])
    for f in files[1:]:
        header = _csv_header(f)
        if header != first:
            raise InputError(f, 1, None, f"header {','.join(header)!r} differs from {files[0].name}'s "
                                         f"{','.join(first)!r}; every subject file must have the same columns")


def load_cmb_clin(path: Path, s: Settings) -> list[dict]:
    from qilin.data.readers import read_cmb_clin

    return read_items(read_cmb_clin, path, "cmb-clin", s, s.limit)


def load_dialogue(path: Path, s: Settings) -> list[dict]:
    """Question/answer pairs: a Huatuo-26M-style JSONL (`question`/`answer` or `问`/`答`) or
    Toyhom's doctor-patient CSV (`ask`/`answer`)."""
    from qilin.data.readers import detect_format, read_dialogue_csv, read_qa

    fmt = detect_format(path)
    if fmt not in ("qa", "dialogue-csv"):
        raise InputError(path, None, None, f"expected question/answer pairs (JSONL or the ask/answer CSV), found {fmt}")
    return read_items(read_qa if fmt == "qa" else read_dialogue_csv, path, "dialogue", s, s.limit)


def load_text(path: Path, s: Settings) -> list[dict]:
    """Plain text (one paragraph a line), or JSONL with a `text` field."""
    from qilin.data.readers import read_text

    if path.suffix.lower() == ".jsonl":
        return read_items(_read_text_jsonl, path, "perplexity", s, s.limit)
    return read_items(read_text, path, "perplexity", s, s.limit)


def _read_text_jsonl(path: Path, *, on_error: str, skipped: list):
    from qilin.data.readers import _json_object, _jsonl_items, _records, _string

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        return {"id": str(obj.get("id", f"{path.stem}-{index}")), "text": _string(path, line, obj, "text")}

    return _records(path, _jsonl_items(path), parse, on_error, skipped)


def load_preference(path: Path, s: Settings) -> list[dict]:
    from qilin.data.readers import read_preference

    return read_items(read_preference, path, "preference", s, s.limit)


# ------------------------------------------------------------------------- multiple choice

def mc_prompt(task: str, r: dict) -> str:
    if task == "cmexam":
        return cmexam_prompt(r)
    item = lambda x: CMMLU_ITEM.format(question=x["question"],  # noqa: E731
                                       options="\n".join(f"{k}. {v}" for k, v in sorted(x["options"].items())))
    shots = "".join(item(d) + d["answer"] + "\n\n" for d in r.get("shots", []))
    return CMMLU_DESCRIPTION.format(subject=MEDICAL_SUBJECTS[r["subject"]]) + shots + item(r)


# generation protocol -> (raw output, the question's options) -> predicted letters
EXTRACTORS: dict[str, Callable[[str, dict], str]] = {
    "qilin-med": lambda out, options: first_letter_run(out, "".join(sorted(options))),
    "cmexam": cmexam_official,
    "generation": lambda out, options: cmmlu_choice(out, "".join(sorted(options))),
}


def predict_choice(task: str, lm: LM, rows: list[dict], protocols: list[str], s: Settings) -> list[dict]:
    """Prediction lines of a multiple-choice task for each protocol; one generation pass serves
    every generation protocol, one forward pass per question serves `logits`."""
    prompts = [mc_prompt(task, r) for r in rows]
    lines = []
    gen_protocols = [p for p in protocols if p != "logits"]
    if gen_protocols:
        outputs = lm.generate(prompts, s.max_new_tokens or TASKS[task].max_new_tokens, s.batch_size)
        for proto in gen_protocols:
            lines += [_choice_line(task, proto, r, p, o, EXTRACTORS[proto](o, r["options"]))
                      for r, p, o in zip(rows, prompts, outputs)]
    if "logits" in protocols:
        letters = sorted({k for r in rows for k in r["options"]})
        ids = [_single_token(lm, k) for k in letters]
        groups = [r.get("subject") for r in rows]  # CMMLU: a subject's prompts share instruction + shots
        for r, p, lp in zip(rows, prompts, lm.next_token_logprobs(prompts, ids, s.batch_size, groups)):
            own = {k: v for k, v in zip(letters, lp) if k in r["options"]}
            line = _choice_line(task, "logits", r, p, None, max(own, key=own.get))
            lines.append({**line, "logprobs": own})
    return lines


def _choice_line(task: str, protocol: str, r: dict, prompt: str, output: str | None, pred: str) -> dict:
    line = {"task": task, "protocol": protocol, "id": r["id"], "prompt": prompt, "output": output,
            "prediction": pred, "reference": r["answer"], "correct": pred == r["answer"],
            "n_options": len(r["options"])}
    if "subject" in r:
        line["subject"] = r["subject"]
    return line


def accuracy(lines: list[dict]) -> dict:
    k = sum(bool(x["correct"]) for x in lines)
    n = len(lines)
    return {"value": k / n if n else None, "n": n, "ci95": list(M.binomial_ci(k, n))}


def score_cmexam(lines: list[dict]) -> dict:
    """Accuracy on all, single- and multi-answer questions; chance; weighted P/R/F1 (cmexam protocol)."""
    single = [x for x in lines if len(x["reference"]) == 1]
    out = {"accuracy": accuracy(lines), "accuracy_single": accuracy(single),
           "accuracy_multi": accuracy([x for x in lines if len(x["reference"]) > 1]),
           "chance_single": {"value": M.mean([1 / x["n_options"] for x in single]) if single else None,
                             "n": len(single)}}
    if lines and lines[0]["protocol"] == "cmexam":
        prf = M.weighted_prf([x["reference"] for x in lines], [x["prediction"] for x in lines])
        out.update({f"{k}_weighted": {"value": v, "n": len(lines)} for k, v in prf.items()})
    return out


def score_cmmlu(lines: list[dict]) -> dict:
    """Per-subject accuracy, macro (the official average) and micro over the subjects present, and
    CMMLU-Med (macro over its 7 subjects; null unless all 7 are present)."""
    by = {}
    for x in lines:
        by.setdefault(x["subject"], []).append(x)
    out = {f"accuracy.{sub}": accuracy(items) for sub, items in sorted(by.items())}
    accs = [out[f"accuracy.{sub}"]["value"] for sub in sorted(by)]
    out["accuracy_macro"] = {"value": M.mean(accs), "n": len(lines), "subjects": len(by)}
    out["accuracy_micro"] = accuracy(lines)
    med = [out[f"accuracy.{sub}"]["value"] for sub in CMMLU_MED if sub in by]
    out["cmmlu_med"] = {"value": M.mean(med) if len(med) == len(CMMLU_MED) else None,
                        "n": sum(len(by[sub]) for sub in CMMLU_MED if sub in by), "subjects": len(med)}
    return out


# ------------------------------------------------------------------------------ generation

def dialogue_messages(task: str, r: dict) -> list[list[dict]]:
    """The conversations to answer for one item: one per turn. CMB-Clin turn k sees the case, the
    earlier questions and their REFERENCE answers (METHODS.md 4), never the model's own."""
    if task == "dialogue":
        return [[{"role": "user", "content": r["question"]}]]
    convs, history = [], []
    for k, turn in enumerate(r["turns"]):
        question = f"{r['description']}\n{turn['question']}" if k == 0 else turn["question"]
        convs.append(history + [{"role": "user", "content": question}])
        history = convs[-1] + [{"role": "assistant", "content": turn["answer"]}]
    return convs


def predict_text(task: str, lm: LM, rows: list[dict], protocols: list[str], s: Settings) -> list[dict]:
    """Greedy answers (chat template), scored by every requested variant; `judge` adds LLM ratings."""
    items = []  # (id, conversation, reference)
    for r in rows:
        convs = dialogue_messages(task, r)
        refs = [r["answer"]] if task == "dialogue" else [t["answer"] for t in r["turns"]]
        ids = [r["id"]] if task == "dialogue" else [f"{r['id']}-{k + 1}" for k in range(len(convs))]
        items += zip(ids, convs, refs)
    prompts = [chat_prompt(lm.tokenizer, conv) for _, conv, _ in items]
    outputs = lm.generate(prompts, s.max_new_tokens or TASKS[task].max_new_tokens, s.batch_size)
    base = [{"task": task, "id": i, "prompt": p, "output": o, "prediction": o.strip(), "reference": ref}
            for (i, _, ref), p, o in zip(items, prompts, outputs)]
    lines = []
    for proto in protocols:
        if proto == "judge":
            from qilin.eval.judge import judge_answers

            rated = judge_answers(s.judge, s.judge_model, [conv for _, conv, _ in items], base, CLIN_CRITERIA)
            lines += [{**b, "protocol": proto, "scores": sc} for b, sc in zip(base, rated)]
            continue
        per = M.dialogue_scores([b["prediction"] for b in base], [b["reference"] for b in base])[1]
        keys = VARIANT_KEYS[proto]
        lines += [{**b, "protocol": proto, "scores": {k: sc[src] for k, src in keys.items() if src in sc}}
                  for b, sc in zip(base, per)]
    return lines


# metric -> key in metrics.dialogue_scores' per-example dict, per variant
VARIANT_KEYS = {"char": {"rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL"},
                "qilin-med": {"rouge1": "qilinmed.rouge1", "rouge2": "qilinmed.rouge2"}}


def score_text(lines: list[dict]) -> dict:
    """Corpus BLEU-1..4 (+ Distinct-1/2 for `char`) from the predictions and references, and the
    per-example ROUGE scores of the lines averaged; `judge`: each criterion's mean rating."""
    n = len(lines)
    if lines and lines[0]["protocol"] == "judge":
        out = {}
        for c in CLIN_CRITERIA + ("overall",):
            vals = [x["scores"][c] for x in lines if x["scores"].get(c) is not None]
            out[f"judge.{c}"] = {"value": M.mean(vals) if vals else None, "n": len(vals)}
        out["judge.unparsed"] = {"value": sum(x["scores"].get("overall") is None for x in lines), "n": n}
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


# ------------------------------------------------------------------- perplexity, preference

def predict_ppl(task: str, lm: LM, rows: list[dict], protocols: list[str], s: Settings) -> list[dict]:
    per = lm.token_nll([r["text"] for r in rows], PPL_MAX_LENGTH, s.batch_size)
    return [{"task": task, "protocol": "token-nll", "id": r["id"], "nll": nll, "tokens": n}
            for r, (nll, n) in zip(rows, per)]


def score_ppl(lines: list[dict]) -> dict:
    ppl, tokens, nll = M.pooled_perplexity([(x["nll"], x["tokens"]) for x in lines])
    return {"perplexity": {"value": ppl, "n": len(lines), "tokens": tokens},
            "nll": {"value": nll, "n": len(lines), "tokens": tokens}}


def predict_preference(task: str, lm: LM, rows: list[dict], protocols: list[str], s: Settings) -> list[dict]:
    prompts = [chat_prompt(lm.tokenizer, r.get("history", []) + [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    conts = [(answer_text(lm.tokenizer, r["prompt"], p, r["chosen"]),
              answer_text(lm.tokenizer, r["prompt"], p, r["rejected"])) for r, p in zip(rows, prompts)]
    scores = lm.sequence_logprob(prompts * 2, [c for c, _ in conts] + [x for _, x in conts], s.batch_size)
    lines = []
    for proto in protocols:
        for i, (r, p) in enumerate(zip(rows, prompts)):
            (cs, cn), (rs, rn) = scores[i], scores[len(rows) + i]
            c, x = (cs, rs) if proto == "sum" else (cs / max(cn, 1), rs / max(rn, 1))
            lines.append({"task": task, "protocol": proto, "id": r["id"], "prompt": p, "chosen": conts[i][0],
                          "rejected": conts[i][1], "chosen_logprob": cs, "chosen_tokens": cn,
                          "rejected_logprob": rs, "rejected_tokens": rn, "margin": c - x, "correct": c > x})
    return lines


def score_preference(lines: list[dict]) -> dict:
    return {"accuracy": accuracy(lines)}


# ----------------------------------------------------------------------------- declarations

PPL_MAX_LENGTH = 512
_RAW_MC = "raw prompt, no chat template"
_GREEDY = "greedy (do_sample=False, num_beams=1), stop at <|im_end|> / EOS"


@dataclass(frozen=True)
class Task:
    demo: str                               # bundled demo split, under data/
    load: Callable[[Path, Settings], list[dict]]
    predict: Callable[..., list[dict]]      # (task, lm, rows, protocols, settings) -> lines
    score: Callable[[list[dict]], dict]     # lines of ONE protocol -> {metric: {"value", "n", ...}}
    protocols: dict[str, dict]              # name -> extraction and metric variant
    default: tuple[str, ...]
    max_new_tokens: int = 0
    prompt: str = ""
    shots_allowed: bool = False


TASKS: dict[str, Task] = {
    "cmexam": Task(
        "cmexam/val.csv", load_cmexam, predict_choice, score_cmexam,
        {"qilin-med": {"extraction": "first ASCII word (letters/digits) made only of the question's option letters; "
                                     "none -> ''", "metric": "exact match with Answer (multi-answer: whole string)"},
         "cmexam": {"extraction": "official: every option whose letter or text occurs in the first non-empty line, "
                                  "A-E order", "metric": "exact match; weighted P/R/F1 over answer strings"},
         "logits": {"extraction": "option letter (of this question's) with the highest next-token log-prob after "
                                  "the prompt; one forward pass", "metric": "exact match; can only produce one letter"}},
        ("qilin-med",), 50, "{question}\\n{A text\\nB text...}\\n答案： (" + _RAW_MC + ")"),
    "cmmlu-medical": Task(
        "cmmlu_medical/dev", load_cmmlu, predict_choice, score_cmmlu,
        {"logits": {"extraction": "letter A-D with the highest next-token log-prob; one forward pass",
                    "metric": "accuracy per subject; macro (official) and micro averages; CMMLU-Med = macro of 7"},
         "generation": {"extraction": "CMMLU official extract_choice rules in order; no match -> '' (the "
                                      "original draws a random letter)", "metric": "as logits"}},
        ("logits",), 50, CMMLU_DESCRIPTION.replace("\n", "\\n") + "[shots: item + answer + \\n\\n] "
        + CMMLU_ITEM.replace("\n", "\\n").replace("{options}", "A. {A}\\nB. {B}\\nC. {C}\\nD. {D}")
        + " (" + _RAW_MC + ")", shots_allowed=True),
    "cmb-clin": Task(
        "cmb_clin/CMB-Clin-qa.json", load_cmb_clin, predict_text, score_text,
        {"char": {"extraction": "whole answer, stripped", "metric": "characters, whitespace removed; corpus BLEU-1..4 "
                                                                     "cumulative no smoothing; ROUGE-1/2/L F1 per turn averaged; Distinct-1/2; x100"},
         "qilin-med": {"extraction": "whole answer, stripped", "metric": "BLEU-1..4 on jieba words; ROUGE-1/2 F1 on "
                                                                          "sets of unique character n-grams, per turn averaged; x100"},
         "judge": {"extraction": "whole answer", "metric": "LLM judge (OpenAI-compatible, temperature 0) rates fluency, "
                                                             "relevance, completeness, medical proficiency 1-5; mean per criterion"}},
        ("char", "qilin-med"), 256, "chat template; turn 1 = description + \\n + question 1; turn k carries the "
        "earlier questions with their REFERENCE answers"),
    "dialogue": Task(
        "toyhom_dialogue_im/im_sample_6644.csv", load_dialogue, predict_text, score_text,
        {"char": {"extraction": "whole answer, stripped", "metric": "characters, whitespace removed; corpus BLEU-1..4 "
                                                                     "cumulative no smoothing; ROUGE-1/2/L F1 per example averaged; Distinct-1/2; x100"},
         "qilin-med": {"extraction": "whole answer, stripped", "metric": "BLEU-1..4 on jieba words; ROUGE-1/2 F1 on "
                                                                          "sets of unique character n-grams, per example averaged; x100"}},
        ("char", "qilin-med"), 128, "chat template, user = question"),
    "perplexity": Task(
        "medicalgpt_samples/infectious_disease_textbook.txt", load_text, predict_ppl, score_ppl,
        {"token-nll": {"extraction": "-", "metric": f"exp(token-weighted mean NLL); windows of {PPL_MAX_LENGTH} tokens "
                                                     "overlapping by one; every token after a text's first; no EOS"}},
        ("token-nll",), 0, "the raw text, one item per non-empty line (or JSONL 'text')"),
    "preference": Task(
        "medicalgpt_samples/medical_reward_pairs_100.jsonl", load_preference, predict_preference, score_preference,
        {"sum": {"extraction": "-", "metric": "share of pairs whose chosen answer has the higher summed log-prob "
                                              "(DPO's implicit preference); ties wrong"},
         "mean": {"extraction": "-", "metric": "as sum, with the per-token mean log-prob"}},
        ("sum",), 0, "chat template (user = prompt, assistant = answer incl. <|im_end|>)"),
}


def describe(task: str, protocol: str, s: Settings) -> dict:
    """The protocol in full, as results.json carries it."""
    t = TASKS[task]
    generates = protocol not in ("logits", "token-nll", "sum", "mean")
    shots = s.shots if t.shots_allowed else 0
    return {
        "prompt_template": t.prompt,
        "shots": shots,
        "shot_selection": ("first N questions of the subject's dev file, never the evaluated question itself "
                           "(lm-evaluation-harness first_n)" if shots else "zero-shot"),
        "seed": s.seed,
        "decoding": ({"method": _GREEDY, "max_new_tokens": s.max_new_tokens or t.max_new_tokens,
                      "batch_size": s.batch_size, "padding": "left", "kv_cache": True} if generates else
                     {"method": "single forward pass per item (no sampling)", "batch_size": s.batch_size}),
        "extraction": t.protocols[protocol]["extraction"],
        "metric_variant": t.protocols[protocol]["metric"],
        **({"judge": {"url": s.judge, "model": s.judge_model, "temperature": 0,
                      "criteria": list(CLIN_CRITERIA)}} if protocol == "judge" else {}),
    }


def choose_protocols(tasks: list[str], asked: list[str] | None) -> dict[str, list[str]]:
    """Each task's protocols: those asked that it knows (all of its own with 'all'), else its defaults."""
    known = {p for t in tasks for p in TASKS[t].protocols}
    for p in asked or []:
        if p != "all" and p not in known:
            raise QilinError(f"--protocol {p}: none of the tasks {', '.join(tasks)} has it; known: {', '.join(sorted(known))}")
    out = {}
    for t in tasks:
        own = list(TASKS[t].protocols)
        picked = own if asked and "all" in asked else [p for p in own if p in (asked or [])]
        out[t] = [p for p in picked if p != "judge"] or list(TASKS[t].default)
    return out


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
