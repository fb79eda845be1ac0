"""THE evaluation: `evaluate(model_dir, data, cfg, out)` runs tasks of the task table (eval/tasks.py)
and writes `OUT/results.json`, `OUT/predictions/<task>.jsonl` and `OUT/metrics.json`. `qilin eval` calls
it with the user's files; the evaluation after every stage of `qilin run` calls it (`evaluate_heldout`)
with the data stage's held-out files. Same model, same files, same config: same numbers.

results.json (schema 2):
    {"schema": 2, "model": {"dir", "weights_hash"}, "versions": {...}, "settings": {...},
     "tasks": {task: {"data": {"path", "bundled", "hash", "items", "skipped": {"count", "items"}},
                      "seconds", "items_per_second",
                      "protocols": {protocol: {<describe(): prompt_template, shots, shot_selection,
                                               seed, decoding, extraction, metric_variant>,
                                               "n_items", "metrics": {name: {"value", "n", ...}}}}}}}
metrics.json, the flat view the recipe's summary and the report read, derived from results.json:
    {"metrics": {name: value}, "protocols": {name: one line}, "n": {name: items}, "ci95": {name: [lo, hi]},
     "seconds": {task: s}, "rag": {...} (with retrieval)}
with names from tasks.flat_name (cmexam.accuracy = the qilin-med protocol, cmexam.accuracy_logits, ...).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict
from pathlib import Path

from qilin.errors import QilinError
from qilin.eval.loaders import BUNDLED
from qilin.eval.tasks import TASKS, EvalConfig, bundled, check_tasks, choose_protocols, describe, flat_name, one_line
from qilin.runs import atomic_write_json, atomic_write_jsonl, file_hash, iter_jsonl, read_json, versions

SCHEMA = 2
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def evaluate(model_dir: str | Path, data: dict[str, str | Path], cfg: EvalConfig, out_dir: str | Path,
             tasks: list[str] | None = None) -> dict:
    """Evaluate `tasks` (default cfg.tasks) on the files in `data` (task -> path; a task without one
    reads its bundled demo split). Every input is read and checked before the model loads, so a bad
    file fails fast. Returns the results.json dict."""
    model_dir, out = Path(model_dir), Path(out_dir)
    tasks = list(tasks or cfg.tasks)
    if not tasks:
        raise QilinError("eval: no tasks given")
    check_tasks(tasks + [t for t in data if t not in tasks], cfg)
    from qilin.model.load import check_model_dir

    check_model_dir(model_dir)
    judge = None
    if cfg.judge:
        from qilin.eval.judge import load_template

        judge = load_template(cfg.judge_template)[1]  # the template decides the judge protocol's name
    protocols = choose_protocols(tasks, cfg.protocols, judge)
    paths = {t: Path(data[t]) if t in data else bundled(t) for t in tasks}
    skipped: dict[str, list] = {}
    rows = {t: TASKS[t].load(paths[t], cfg, skipped, t) for t in tasks}
    passages, index_meta = _with_passages(rows, cfg) if cfg.rag else ({}, {})

    from qilin.model.runtime import load_lm

    lm = load_lm(model_dir)
    result = {"schema": SCHEMA, "model": {"dir": str(model_dir.resolve()), "weights_hash": weights_hash(model_dir)},
              "versions": _versions(), "settings": {**asdict(cfg), "tasks": tasks}, "tasks": {}}
    for t in tasks:
        start = time.perf_counter()
        lines = TASKS[t].predict(t, lm, rows[t], protocols[t], cfg)
        if t in passages:
            lines = [{**line, "passages": passages[t].get(line["id"])} for line in lines]
        seconds = time.perf_counter() - start
        atomic_write_jsonl(out / "predictions" / f"{t}.jsonl", lines)
        result["tasks"][t] = {
            "data": {"path": str(paths[t]), "bundled": t not in data or paths[t] == BUNDLED / TASKS[t].demo,
                     "hash": file_hash(paths[t]),
                     "items": len(rows[t]), "skipped": {"count": len(skipped.get(t, [])), "items": skipped.get(t, [])}},
            "seconds": round(seconds, 3), "items_per_second": round(len(rows[t]) / seconds, 3) if seconds else None,
            "protocols": {p: {**describe(t, p, cfg), **score_lines(t, p, lines)} for p in protocols[t]}}
    del lm
    result = _json_safe(result)
    if cfg.rag:
        result["rag"] = {"index": str(cfg.rag), "k": cfg.rag_k, "mode": cfg.rag_mode, "max_chars": cfg.rag_max_chars,
                         **index_meta, "tasks": sorted(passages)}
    atomic_write_json(out / "results.json", result)
    atomic_write_json(out / "metrics.json", flat_view(result))
    return result


def heldout_data(data_dir: str | Path, cfg: EvalConfig) -> tuple[list[str], dict[str, Path]]:
    """The tasks to run after a stage and their files in the data stage's eval/ folder: cfg.tasks
    (each file must be there), or every task whose held-out file the data stage wrote."""
    eval_dir = Path(data_dir) / "eval"
    if cfg.tasks:
        missing = [t for t in cfg.tasks if t in TASKS and not TASKS[t].standalone
                   and not (TASKS[t].heldout and (eval_dir / TASKS[t].heldout).is_file())]
        if missing:
            raise QilinError(f"eval tasks {', '.join(missing)}: the data stage wrote no "
                             + ", ".join(str(eval_dir / (TASKS[t].heldout or f'{t} file (read with qilin eval --data)'))
                                         for t in missing))
        tasks = list(cfg.tasks)
    else:
        tasks = [t for t, task in TASKS.items() if task.heldout and (eval_dir / task.heldout).is_file()]
    return tasks, {t: _heldout_file(t, eval_dir, cfg) for t in tasks if t in TASKS}


def _heldout_file(task: str, eval_dir: Path, cfg: EvalConfig) -> Path:
    """The data stage's held-out file; for an evaluation-only task without one, eval.data[task] or
    the bundled demo split."""
    own = eval_dir / TASKS[task].heldout
    if own.is_file() or not TASKS[task].standalone:
        return own
    return Path(cfg.data[task]) if task in cfg.data else bundled(task)


def evaluate_heldout(model_dir: str | Path, data_dir: str | Path, cfg: EvalConfig, out_dir: str | Path) -> dict:
    """The evaluation after a stage: `evaluate` over the data stage's held-out files; returns metrics.json."""
    tasks, data = heldout_data(data_dir, cfg)
    evaluate(model_dir, data, cfg, out_dir, tasks)
    return read_json(Path(out_dir) / "metrics.json")


def flat_view(result: dict) -> dict:
    """metrics.json from a results.json dict: one name per (task, protocol, metric)."""
    out: dict = {"metrics": {}, "protocols": {}, "n": {}, "ci95": {}, "seconds": {}}
    for task, tr in result["tasks"].items():
        out["seconds"][task] = tr["seconds"]
        for proto, pr in tr["protocols"].items():
            line = one_line(pr, proto)
            for metric, m in pr["metrics"].items():
                name = flat_name(task, proto, metric)
                out["metrics"][name], out["protocols"][name], out["n"][name] = m["value"], line, m["n"]
                if "ci95" in m:
                    out["ci95"][name] = m["ci95"]
    if "rag" in result:
        out["rag"] = result["rag"]
    return out


def _with_passages(rows: dict[str, list[dict]], cfg: EvalConfig) -> tuple[dict[str, dict[str, list]], dict]:
    """Put each task's top-k passages before its question (in place); return task -> {id: passage
    ids}, and the index's tokenizer and size.
    Tasks without a single question (perplexity texts, CMB-Clin's multi-turn cases) are left alone."""
    from qilin.rag.augment import augment_records
    from qilin.rag.retrieve import Index

    index = Index(cfg.rag)  # a missing or incompatible index is a QilinError
    out = {}
    for t, items in rows.items():
        field = TASKS[t].rag_field
        if field:
            rows[t] = augment_records(index, items, field, cfg.rag_k, cfg.rag_mode, cfg.rag_max_chars)
            out[t] = {r["id"]: r["rag_passages"] for r in rows[t]}
    return out, {"tokenizer": index.meta.get("tokenizer"), "passages": len(index)}


def score_lines(task: str, protocol: str, lines: list[dict]) -> dict:
    mine = [x for x in lines if x["protocol"] == protocol]
    return {"n_items": len(mine), "metrics": TASKS[task].score(mine)}


def recompute(out_dir: str | Path) -> dict:
    """{task: {protocol: metrics}} from predictions/*.jsonl alone (nothing else is read)."""
    out = {}
    for path in sorted((Path(out_dir) / "predictions").glob("*.jsonl")):
        lines = [r for _, r in iter_jsonl(path, "predictions file")]
        task = path.stem
        for p in dict.fromkeys(x["protocol"] for x in lines):
            out.setdefault(task, {})[p] = _json_safe(score_lines(task, p, lines))["metrics"]
    return out


def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files (names and bytes, sorted); the tokenizer and configs excluded."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return file_hash(model_dir)
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(model_dir)).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def format_results(result: dict) -> str:
    """A plain-text view of a results.json: each metric with its protocol spelled out."""
    out = [f"model {result['model']['dir']} ({result['model']['weights_hash']})",
           "versions " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())]
    for task, tr in result["tasks"].items():
        d = tr["data"]
        out.append(f"\n## {task}: {d['items']} items from {d['path']}"
                   f"{' (bundled demo)' if d['bundled'] else ''}, {d['skipped']['count']} skipped; "
                   f"{tr['items_per_second']} items/s")
        for proto, pr in tr["protocols"].items():
            out.append(f"  protocol {proto}: prompt {pr['prompt_template']}; {pr['shot_selection']}"
                       f" ({pr['shots']} shots, seed {pr['seed']}); decoding {_decoding(pr['decoding'])}; "
                       f"extraction: {pr['extraction']}; metric: {pr['metric_variant']}; {pr['n_items']} lines")
            for name, m in pr["metrics"].items():
                value = "n/a" if m["value"] is None else f"{m['value']:.4f}"
                ci = f"  95% CI [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if "ci95" in m else ""
                out.append(f"    {task}.{proto}.{name:<44} {value:>10}  n={m['n']}{ci}")
        if task == "cmb-clin" and "cmb-clin-judge" not in tr["protocols"]:
            out.append("  the official CMB-Clin score (judge ratings with the CMB README's prompt) was NOT computed; "
                       "give --judge URL --judge-template FILE for it")
    return "\n".join(out)


def show(path: str | Path) -> str:
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise QilinError(f"{path}: no results.json (written by `qilin eval`)")
    return format_results(read_json(path))


def _decoding(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _versions() -> dict:
    from importlib import metadata

    out = versions()
    for name in ("jieba", "tokenizers", "lm_eval"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _json_safe(obj):
    """NaN / inf are not JSON: null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
