"""Small hand-made run folders, written the way the stages write them, for the report's section tests."""

from __future__ import annotations

from pathlib import Path

from qilin.runs import atomic_write_json, atomic_write_jsonl


def write_run(root: Path, name: str, steps: list[dict]) -> Path:
    """steps: {name, kind, folder?, metrics?, ci95?, protocols?, preds? {task: rows}, model_in?, model_out?,
    train?, rows?}; a step with `model_out` True gets <folder>/model as its model."""
    listed = []
    for i, s in enumerate(steps):
        folder = s.get("folder", f"{i:02d}-{s['name']}")
        listed.append([s["name"], folder, s["kind"]])
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        if s.get("metrics") is not None:
            atomic_write_json(path / "eval" / "metrics.json", {
                "metrics": s["metrics"], "protocols": s.get("protocols", {}), "n": {}, "ci95": s.get("ci95", {})})
        for task, rows in (s.get("preds") or {}).items():
            atomic_write_jsonl(path / "eval" / "predictions" / f"{task}.jsonl", rows)
        if s.get("train") is not None:
            atomic_write_json(path / "metrics.json", s["train"])
        if s.get("rows") is not None:
            atomic_write_json(path / "eval" / "rows.json", s["rows"])
        manifest = {"inputs": {"model": {"path": str(root / s["model_in"]), "hash": None}} if s.get("model_in") else {}}
        if s.get("model_out"):
            manifest["model"] = str(root / s["model_out"])
        atomic_write_json(path / "manifest.json", manifest)
    atomic_write_json(root / "recipe.json", {"name": name, "seed": 1, "steps": listed})
    return root


def accuracy_rows(correct: list[bool], protocol: str = "qilin-med") -> list[dict]:
    """One prediction line per item, as qilin.eval.choice / likelihood write them (preference: "mean")."""
    return [{"id": f"q{i}", "protocol": protocol, "correct": c} for i, c in enumerate(correct)]


def ppl_rows(nll_per_token: list[float], tokens: int = 50) -> list[dict]:
    return [{"id": f"t{i}", "protocol": "token-nll", "nll": x * tokens, "tokens": tokens}
            for i, x in enumerate(nll_per_token)]


def dialogue_rows(predictions: list[str], references: list[str]) -> list[dict]:
    """Both protocols' lines (qilin.eval.text), the per-item scores left for the report to recompute."""
    return [{"id": f"d{i}", "protocol": proto, "prediction": p, "reference": r}
            for proto in ("char", "qilin-med") for i, (p, r) in enumerate(zip(predictions, references))]
