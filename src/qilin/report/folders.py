"""What the report reads: the run folders of one recipe run, gathered once (`RunInfo`), and the table
columns every section shares. Nothing here writes; sections take a RunInfo and return fragments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qilin.runs import read_json
from qilin.stages import STAGES, Stage

# Columns of the main table: metric key -> (header, scale for display, better direction). Each header
# names its metric variant: `(char)` = on characters, `(qilin-med)` = the Qilin-Med repository's variant,
# the one its published numbers use (published numbers stand only beside their own variant).
COLUMNS = {
    "cmexam.accuracy": ("CMExam acc (qilin-med)", 100, "higher"),
    "cmexam.accuracy_logits": ("CMExam acc (logits)", 100, "higher"),
    "dialogue.bleu1": ("BLEU-1 (char)", 1, "higher"),
    "dialogue.rouge1": ("ROUGE-1 (char)", 1, "higher"),
    "dialogue.qilinmed.bleu1": ("BLEU-1 (qilin-med)", 1, "higher"),
    "dialogue.qilinmed.rouge1": ("ROUGE-1 (qilin-med)", 1, "higher"),
    "ppl.medical": ("PPL medical", 1, "lower"),
    "ppl.general": ("PPL general", 1, "lower"),
    "preference.accuracy": ("Pref acc", 100, "higher"),
}


@dataclass
class Step:
    """One step of the recipe run: its name, kind (a key of qilin.stages.STAGES), folder and files."""

    name: str
    kind: str | None
    path: Path
    eval: dict | None = None       # eval/metrics.json: the benchmark evaluation of its model
    train: dict | None = None      # metrics.json: the stage's own numbers (training, retrieval quality)
    rows: dict | None = None       # eval/rows.json: extra summary rows (rejection rounds, `<model>+rag`)
    history: list | None = None    # history.json: training loss
    manifest: dict | None = None   # manifest.json: inputs, output model

    @property
    def record(self) -> Stage | None:
        return STAGES.get(self.kind) if self.kind else None

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"


@dataclass
class RunInfo:
    run_dir: Path
    recipe: dict
    steps: list[Step]
    card: dict | None = None
    plot_dir: Path = field(default=Path("plots"))


def collect(run_dir: Path) -> RunInfo:
    recipe = read_json(run_dir / "recipe.json")
    steps = []
    for name, folder, *kind in recipe["steps"]:
        # recipe.json of qilin before stage records had no kind: a step then is the stage it is named after
        step = Step(name, kind[0] if kind else (name if name in STAGES else None), run_dir / folder)
        for attr, rel in (("eval", "eval/metrics.json"), ("train", "metrics.json"), ("rows", "eval/rows.json"),
                          ("history", "history.json"), ("manifest", "manifest.json")):
            setattr(step, attr, read_json(step.path / rel) if (step.path / rel).is_file() else None)
        steps.append(step)
    card = steps[0].path / "card.json" if steps else None
    return RunInfo(run_dir, recipe, steps, read_json(card) if card and card.is_file() else None,
                   run_dir / "plots")


def evaluated(info: RunInfo) -> list[Step]:
    return [s for s in info.steps if s.eval]


def of_kind(info: RunInfo, kind: str) -> list[Step]:
    return [s for s in info.steps if s.kind == kind]


def model_rows(info: RunInfo) -> list[Step]:
    """Every evaluated model, one row each (only models have eval/metrics.json: a reward model or a data
    stage writes its numbers to its own files); a stage with rounds (rejection) gives one row per round."""
    return [row for s in evaluated(info) for row in (round_rows(s) or [s])]


def rounds(step: Step) -> dict[str, dict]:
    """The per-round summary rows of a step (eval/rows.json), not rows of another kind (`<model>+rag`)."""
    return {name: row for name, row in (step.rows or {}).items() if "round" in row}


def round_rows(step: Step) -> list[Step]:
    """One table row per round of a stage that writes eval/rows.json, with the round's own evaluation
    (and so its intervals and predictions) where the round folder has one."""
    out = []
    for name, row in rounds(step).items():
        folder = step.path / f"round{row.get('round')}"
        own = folder / "eval" / "metrics.json"
        manifest = folder / "manifest.json"
        out.append(Step(name, step.kind, folder, eval=read_json(own) if own.is_file() else {"metrics": row},
                        manifest=read_json(manifest) if manifest.is_file() else None))
    return out


def input_model(step: Step) -> str | None:
    return (((step.manifest or {}).get("inputs") or {}).get("model") or {}).get("path")


def output_model(step: Step) -> str | None:
    return (step.manifest or {}).get("model")


def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * COLUMNS[key][1]:.2f}" if key in COLUMNS else f"{value:.4g}"


def num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@dataclass
class Fragment:
    """What a section gives the report: markdown lines (the HTML page is made from them) and plots."""

    lines: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
