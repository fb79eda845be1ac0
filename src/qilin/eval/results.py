"""`qilin eval`: run benchmark tasks on one model and write `OUT/results.json` and
`OUT/predictions/<task>.jsonl`; recompute every number from the predictions; show a results file.

results.json (schema 1):
    {"schema": 1, "model": {"dir", "weights_hash"}, "versions": {...}, "settings": {...},
     "tasks": {task: {"data": {"path", "bundled", "hash", "items", "skipped": {"count", "items"}},
                      "seconds", "items_per_second",
                      "protocols": {protocol: {<describe(): prompt_template, shots, shot_selection,
                                               seed, decoding, extraction, metric_variant>,
                                               "n_items", "metrics": {name: {"value", "n", ...}}}}}}}
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict
from pathlib import Path

from qilin.errors import QilinError
from qilin.eval.tasks import TASKS, Settings, choose_protocols, describe, read_json_lines
from qilin.runs import atomic_write_json, atomic_write_jsonl, file_hash, read_json, versions

SCHEMA = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def run_eval(model_dir: str | Path, tasks: list[str], data: dict[str, str | Path], settings: Settings,
             out_dir: str | Path) -> dict:
    """Evaluate; every input is read and checked before the model loads, so a bad file fails fast."""
    model_dir, out = Path(model_dir), Path(out_dir)
    unknown = [t for t in list(tasks) + list(data) if t not in TASKS]
    if unknown:
        raise QilinError(f"unknown task {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if settings.shots and not any(TASKS[t].shots_allowed for t in tasks):
        raise QilinError(f"--shots {settings.shots}: only cmmlu-medical takes shots (the others are zero-shot)")
    protocols = choose_protocols(tasks, settings.protocols)
    if settings.judge and "cmb-clin" in tasks:
        protocols["cmb-clin"].append("judge")
    paths = {t: Path(data[t]) if t in data else _bundled(t) for t in tasks}
    rows = {t: TASKS[t].load(paths[t], settings) for t in tasks}
    if settings.rag:
        rows = _with_passages(rows, settings)

    from qilin.eval.lm import load_lm

    lm = load_lm(model_dir)
    result = {"schema": SCHEMA, "model": {"dir": str(model_dir.resolve()), "weights_hash": weights_hash(model_dir)},
              "versions": _versions(), "settings": {**_settings(settings), "tasks": tasks}, "tasks": {}}
    for t in tasks:
        start = time.perf_counter()
        lines = TASKS[t].predict(t, lm, rows[t], protocols[t], settings)
        if settings.rag:
            passages = {r["id"]: r.get("rag_passages") for r in rows[t]}
            lines = [{**line, "passages": passages.get(line.get("id"))} for line in lines]
        seconds = time.perf_counter() - start
        atomic_write_jsonl(out / "predictions" / f"{t}.jsonl", lines)
        skipped = settings.skipped.get(t, [])
        result["tasks"][t] = {
            "data": {"path": str(paths[t]), "bundled": t not in data, "hash": file_hash(paths[t]),
                     "items": len(rows[t]), "skipped": {"count": len(skipped), "items": skipped}},
            "seconds": round(seconds, 3), "items_per_second": round(len(rows[t]) / seconds, 3) if seconds else None,
            "protocols": {p: {**describe(t, p, settings), **score_lines(t, p, lines)} for p in protocols[t]}}
    result = _json_safe(result)
    atomic_write_json(out / "results.json", result)
    return result


# Retrieval changes the question text only (qilin.rag.prompt): the field each task asks with.
RAG_FIELDS = {"cmexam": "question", "cmmlu-medical": "question", "dialogue": "question", "preference": "prompt"}


def _with_passages(rows: dict[str, list[dict]], settings: Settings) -> dict[str, list[dict]]:
    """Each task's items with their top-k passages before the question; tasks without a single
    question (perplexity texts, CMB-Clin's multi-turn cases) are left as they are."""
    from qilin.rag.augment import augment_records
    from qilin.rag.retrieve import Index

    index = Index(settings.rag)  # a missing or incompatible index is a QilinError
    return {t: augment_records(index, r, RAG_FIELDS[t], settings.rag_k) if t in RAG_FIELDS else r
            for t, r in rows.items()}


def score_lines(task: str, protocol: str, lines: list[dict]) -> dict:
    mine = [x for x in lines if x["protocol"] == protocol]
    return {"n_items": len(mine), "metrics": TASKS[task].score(mine)}


def recompute(out_dir: str | Path) -> dict:
    """{task: {protocol: metrics}} from predictions/*.jsonl alone (nothing else is read)."""
    out = {}
    for path in sorted((Path(out_dir) / "predictions").glob("*.jsonl")):
        lines = read_json_lines(path)
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
    return "\n".join(out)


def show(path: str | Path) -> str:
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise QilinError(f"{path}: no results.json (written by `qilin eval`)")
    return format_results(read_json(path))


def _decoding(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _bundled(task: str) -> Path:
    from qilin.eval.tasks import BUNDLED

    path = BUNDLED / TASKS[task].demo
    if not path.exists():
        raise QilinError(f"{task}: the bundled demo split {path} is not here (installed without the repository's "
                         f"data/); pass --data {task}=PATH")
    return path


def _settings(s: Settings) -> dict:
    d = asdict(s)
    d.pop("skipped")
    return d


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
