"""`qilin eval export-lm-eval`: lm-evaluation-harness task definitions equivalent to our choice
tasks, so that anyone can check our numbers with the standard harness (benchmarks/bench_eval.py does).

What is written to OUT:
    data/<name>.jsonl   the items exactly as our loaders read them (same ids, options, answers, limit)
    <name>.yaml         one task per (task, protocol[, subject]); `dataset_path: json` with
                        `data_files` pointing at the local JSONL, so nothing is downloaded
    _<group>.yaml       for CMMLU: one group per protocol, macro average over subjects as the official one

Equivalences, protocol by protocol:
- `logits` -> `output_type: multiple_choice`, choices = the option letters, `target_delimiter: ""`,
  so lm-eval scores log p(letter | prompt) exactly where we read the next-token distribution; it
  takes the argmax over the letters, as we do. A multi-answer CMExam question gets the out-of-range
  target len(choices), which lm-eval scores as wrong (as our accuracy on all questions does).
- `letter-run` (CMExam, our own rule) -> `generate_until`, greedy, same max_gen_toks, then a regex
  filter taking the first ASCII word made only of A-E. Equal to our rule on five-option questions; on a four-option
  question our rule also skips a word containing E (lm-eval's filter has no per-question letters).
- CMMLU shots -> `fewshot_config: sampler: first_n` from the dev split, description as the official
  CMMLU prompt, `fewshot_delimiter: "\\n\\n"`; when the evaluated split is dev itself lm-eval leaves
  the evaluated question out of its shots, as we do.
The other tasks (free-text generation, perplexity, preference) have no lm-eval equivalent with the
same metric definitions (its BLEU/ROUGE tokenise differently) and are not exported.
"""

from __future__ import annotations

from pathlib import Path

from qilin.errors import QilinError
from qilin.eval.loaders import MEDICAL_SUBJECTS
from qilin.eval.tasks import TASKS, EvalConfig, bundled, choose_protocols
from qilin.runs import atomic_write_jsonl, atomic_write_text

EXPORTABLE = ("cmexam", "cmmlu-medical")
CMEXAM_TEXT = "{{question}}\n{{options_text}}\n答案："
CMMLU_DESCRIPTION = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
CMMLU_TEXT = "题目：{{question}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案是："
# the letter-run rule as one regex (first match): an ASCII word made only of option letters
LETTER_RUN_REGEX = r"(?<![A-Za-z0-9])([A-E]+)(?![A-Za-z0-9])"


def export_lm_eval(tasks: list[str], data: dict[str, Path], settings: EvalConfig, out: Path) -> list[Path]:
    """Write the data files and task YAMLs; returns the YAML paths (task files first, then groups)."""
    other = [t for t in tasks if t not in EXPORTABLE]
    if other:
        raise QilinError(f"export-lm-eval: {', '.join(other)} cannot be exported (only {', '.join(EXPORTABLE)} "
                         "have lm-eval equivalents with the same metric)")
    protocols = choose_protocols(tasks, settings.protocols)
    written = []
    for task in tasks:
        path = Path(data[task]) if task in data else bundled(task)
        rows = TASKS[task].load(path, settings, {}, task)  # with --limit: the first N (per subject), as `qilin eval`
        if task == "cmexam":
            written += _cmexam(rows, protocols[task], settings, out)
        else:
            written += _cmmlu(rows, protocols[task], settings, out)
    return written


def task_name(task: str, protocol: str, subject: str | None = None) -> str:
    """The lm-eval task name of one of ours: qilin_cmexam_logits, qilin_cmmlu_medical_anatomy_logits ..."""
    parts = ["qilin", task, subject, protocol]
    return "_".join(p.replace("-", "_") for p in parts if p)


def _cmexam(rows: list[dict], protocols: list[str], s: EvalConfig, out: Path) -> list[Path]:
    docs = []
    for r in rows:
        letters = sorted(r["options"])
        target = letters.index(r["answer"]) if len(r["answer"]) == 1 else len(letters)  # multi: always wrong
        docs.append({"id": r["id"], "question": r["question"], "letters": letters, "answer": r["answer"],
                     "options_text": "\n".join(f"{k} {r['options'][k]}" for k in letters), "target": target})
    data = atomic_write_jsonl(out / "data" / "cmexam.jsonl", docs)
    paths = []
    for proto in protocols:
        head = {"task": task_name("cmexam", proto), "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, "test_split": "test",
                "doc_to_text": CMEXAM_TEXT}
        if proto == "logits":
            body = _multiple_choice("{{letters}}", "{{target}}")
        elif proto == "letter-run":
            body = _generate(s.new_tokens("cmexam"), LETTER_RUN_REGEX)
        else:
            raise QilinError(f"export-lm-eval: cmexam protocol {proto} has no lm-eval equivalent (its rule "
                             "needs the option texts per question, or a cascade no regex filter expresses); "
                             "export logits or letter-run")
        paths.append(_yaml(out / f"{head['task']}.yaml", {**head, **body}))
    return paths


def _cmmlu(rows: list[dict], protocols: list[str], s: EvalConfig, out: Path) -> list[Path]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["subject"], []).append(r)
    paths, groups = [], {p: [] for p in protocols}
    for subject, items in by.items():
        test = atomic_write_jsonl(out / "data" / f"cmmlu_{subject}.jsonl", [_plain(r) for r in items])
        # Evaluating dev itself (the bundled demo), our loader keeps an item out of its own shots;
        # lm-eval does that only when the few-shot split IS the test split, so then name them alike.
        files, split = {"dev": str(test.resolve())}, "dev"
        if s.shots and not items[0]["shots_from_self"]:
            shots = {d["id"]: d for r in items for d in r["shots"]}  # the first N of dev, in order
            dev = atomic_write_jsonl(out / "data" / f"cmmlu_{subject}_dev.jsonl", [_plain(d) for d in shots.values()])
            files, split = {"test": str(test.resolve()), "dev": str(dev.resolve())}, "test"
        for proto in protocols:
            name = task_name("cmmlu-medical", proto, subject)
            head = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                    "test_split": split, "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
                    "num_fewshot": s.shots, "description": CMMLU_DESCRIPTION.format(subject=MEDICAL_SUBJECTS[subject]),
                    "fewshot_delimiter": "\n\n", "doc_to_text": CMMLU_TEXT}
            if proto != "logits":
                raise QilinError("export-lm-eval: the CMMLU generation protocol's official extraction is a "
                                 "cascade of rules no lm-eval filter expresses; export the logits protocol")
            body = _multiple_choice(["A", "B", "C", "D"], "{{['A', 'B', 'C', 'D'].index(answer)}}")
            paths.append(_yaml(out / f"{name}.yaml", {**head, **body}))
            groups[proto].append(name)
    for proto, names in groups.items():
        group = task_name("cmmlu-medical", proto)
        paths.append(_yaml(out / f"_{group}.yaml", {
            "group": group, "task": names,
            "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}]}))
    return paths


def _plain(r: dict) -> dict:
    return {"id": r["id"], "question": r["question"], **r["options"], "answer": r["answer"]}


def _multiple_choice(choices, target: str) -> dict:
    return {"output_type": "multiple_choice", "doc_to_choice": choices, "doc_to_target": target,
            "target_delimiter": "", "metric_list": [{"metric": "acc", "aggregation": "mean",
                                                      "higher_is_better": True}],
            "metadata": {"version": 1.0}}


def _generate(max_new_tokens: int, regex: str) -> dict:
    return {"output_type": "generate_until", "doc_to_target": "{{answer}}", "target_delimiter": "",
            "generation_kwargs": {"until": ["<|im_end|>"], "do_sample": False, "max_gen_toks": max_new_tokens},
            "filter_list": [{"name": "letter-run", "filter": [
                {"function": "regex", "regex_pattern": regex, "group_select": 0, "fallback": ""},
                {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0}}


def _yaml(path: Path, obj: dict) -> Path:
    import yaml

    return atomic_write_text(path, yaml.safe_dump(obj, allow_unicode=True, sort_keys=False, width=1000))
