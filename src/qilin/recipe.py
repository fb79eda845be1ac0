"""`qilin run RECIPE.yaml`: the stages of a recipe in order, with evaluation after each.

A recipe file names the data, the base model, the training stages and the evaluation; this module
turns each part into its stage's typed config, runs the stages that are not complete yet, evaluates
every model it produces, and writes `runs/<recipe>/summary.json` and the report.

    runs/<recipe>/00-data/  01-base/  02-cpt/  03-sft/  04-dpo/   (each: config, model, eval/, manifest)
    runs/<recipe>/summary.json   {stage: {metric: value}}
    runs/<recipe>/report.md|html, plots/

Everything is restartable: a complete stage (manifest present) is skipped, an incomplete one resumes
from its last checkpoint, and an evaluation is redone only if its metrics file is missing.

Under a multi-process launch (`accelerate launch -m qilin.cli run RECIPE.yaml`), the training stages
run in every process and everything else (data, unification, retrieval, evaluation, summary, report)
in the main process while the others wait (qilin.dist).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from qilin import config as qconfig
from qilin import dist
from qilin.config import doc
from qilin.errors import QilinError
from qilin.runs import RunFolder, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger("qilin")

# The training stages a recipe may list, by name -> module (a dict is our registry), and the file of
# the data stage's output that each one trains on unless the recipe says otherwise.
STAGES = {"cpt": "qilin.train.cpt", "sft": "qilin.train.sft", "dpo": "qilin.train.dpo", "reward": "qilin.train.reward",
          "rejection": "qilin.train.rejection", "unify": "qilin.data.unify", "onestage": "qilin.train.onestage"}
STAGE_DATA = {"cpt": "train/cpt.jsonl", "sft": "train/sft.jsonl", "dpo": "train/dpo.jsonl", "reward": "train/dpo.jsonl",
              "rejection": "train/sft.jsonl",  # rejection: the SFT prompts are its prompt pool
              "unify": "train/cpt.jsonl", "onestage": "train/sft.jsonl"}
# Stages whose model is not a policy (a reward model): the stages after them keep training the policy
# before them, and get this model as `reward_model` if their Config has that field.
NOT_A_POLICY = {"reward"}
# Stages that make data, not a model (HuatuoGPT-II's unification): they get no model and train nothing,
# the policy passes them by, and the stages after them get the file they wrote as this Config field.
MAKES_DATA = {"unify": ("unified", "unified.jsonl")}
# Stages that train through the Trainer: every process of a multi-process launch runs them.
IN_EVERY_PROCESS = {"qilin.train.base", "qilin.train.cpt", "qilin.train.sft", "qilin.train.dpo",
                    "qilin.train.reward", "qilin.train.rejection", "qilin.train.onestage"}


@dataclass
class Recipe:
    name: str = doc("Recipe name; also the default run folder runs/<name>.")
    out: Path | None = doc("Run folder of the whole recipe (default runs/<name>).", None)
    seed: int = doc("Seed for data splits and every stage, unless a stage sets its own.", 42)
    data: dict = doc("Options of the data stage (qilin.data.prepare.Config).", {})
    base: dict = doc("Options of the base stage (qilin.train.base.Config): a user's model dir, or the tiny default.", {})
    stages: list[dict] = doc("Training stages in order; each a mapping with `stage:` (a key of STAGES), an optional "
                             "`name:` (default: the stage; names the folder and the summary row), an optional "
                             "`from:` (`base` or an earlier stage's name: train from that model instead of the "
                             "previous one, e.g. a second path compared with the first) and its options.", [])
    eval: dict = doc("Options of the evaluation after every stage (qilin.eval.suite.EvalConfig).", {})
    rag: dict | None = doc("Options of the rag stage (qilin.rag.stage.Config): index the CPT corpus and evaluate "
                           "the final model with retrieval (Qilin-Med-RAG); `model:` may name a stage (default: "
                           "the last). An sft stage with `rag: {}` trains with passages from this index, and is "
                           "evaluated with retrieval beside its plain twin (same kind, same input model). "
                           "null = no rag stage.", None)
    report: bool = doc("Write report.md / report.html at the end.", True)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    recipe = qconfig.load(Recipe, path, overrides)
    if recipe.out is None:
        recipe.out = Path("runs") / recipe.name
    names = [s.get("stage") if isinstance(s, dict) else s for s in recipe.stages]
    for i, name in enumerate(names):
        if name not in STAGES:
            raise QilinError(f"{path}: stages[{i}].stage: {name!r} is not one of {', '.join(STAGES)}")
    return recipe


def plan(recipe: Recipe) -> list[tuple[str, RunFolder, object]]:
    """Every step's name, run folder and typed config, built (and so validated) before anything runs."""
    from qilin.data import prepare
    from qilin.train import base

    out = Path(recipe.out)
    data_run = RunFolder(out / "00-data")
    steps: list[tuple[str, RunFolder, object]] = []
    data_cfg = qconfig.build(prepare.Config, {"seed": recipe.seed, **recipe.data, "out": data_run.path}, "data")
    steps.append(("data", data_run, data_cfg))

    base_run = RunFolder(out / "01-base")
    train_dir = data_run.path / "train"
    base_defaults = {"pretrain_data": train_dir / "pretrain_general.jsonl",
                     "corpus": [train_dir / f for f in ("pretrain_general.jsonl", "cpt.jsonl", "sft.jsonl")]}
    base_cfg = qconfig.build(base.Config, _seeded(qconfig.merge(base_defaults, recipe.base), recipe.seed)
                             | {"out": base_run.path}, "base")
    steps.append(("base", base_run, base_cfg))

    # A user's own base model is used in place; the tiny default is written into the base folder.
    policy = Path(recipe.base["model"]) if recipe.base.get("model") else base_run.model_dir
    reward_model = None
    models = {"base": policy}  # the policies so far by stage name, for `from:`
    made: dict[str, Path] = {}  # Config field -> file, from the MAKES_DATA stages so far
    started_from: dict[str, tuple[str, Path, bool]] = {}  # stage name -> (kind, input model, trained with passages)
    rag_folder = out / f"{len(recipe.stages) + 2:02d}-rag"
    for i, spec in enumerate(recipe.stages):
        spec = dict(spec)
        kind = spec.pop("stage")
        name = spec.pop("name", kind)
        start = spec.pop("from", None)
        if start is not None:  # a path that starts again from an earlier model (a comparison from base)
            if start not in models:
                raise QilinError(f"stages[{i}] ({name}).from: {start!r} is not `base` or an earlier stage "
                                 f"({', '.join(models)})")
            policy = models[start]
        if spec.get("rag") is not None:  # retrieval-augmented training: passages from the rag stage's index
            spec["rag"] = _rag_training(recipe, spec["rag"], rag_folder, f"stages[{i}] ({name}).rag")
        started_from[name] = (kind, policy, spec.get("rag") is not None)
        run = RunFolder(out / f"{i + 2:02d}-{name}")
        module = importlib.import_module(STAGES[kind])
        if kind in MAKES_DATA:
            values = {"data": data_run.path / STAGE_DATA[kind], "seed": recipe.seed, **spec, "out": run.path}
        else:
            values = {"data": data_run.path / STAGE_DATA[kind], **_seeded(spec, recipe.seed),
                      "out": run.path, "model": policy}
        fields = {f.name for f in dataclasses.fields(module.Config)}
        for field_name, path in made.items():
            if field_name in fields:
                values.setdefault(field_name, path)
        if reward_model is not None and "reward_model" in fields:
            values.setdefault("reward_model", reward_model)
        if "eval_data" in fields:  # a stage that evaluates models of its own (rejection: every round's)
            values.setdefault("eval_data", data_run.path)
            values["eval"] = qconfig.merge(_eval_values(recipe, data_run.path), values.get("eval") or {})
        steps.append((name, run, qconfig.build(module.Config, values, f"stages[{i}] ({name})")))
        if kind in NOT_A_POLICY:
            reward_model = run.model_dir  # the next stages keep training the policy, scored by this model
        elif kind in MAKES_DATA:
            made[MAKES_DATA[kind][0]] = run.path / MAKES_DATA[kind][1]
        else:
            policy = models[name] = run.model_dir
    if recipe.rag is not None:
        steps.append(_rag_step(recipe, rag_folder, data_run.path, policy, models, started_from))
    return steps


def _rag_training(recipe: Recipe, value: object, rag_folder: Path, where: str) -> dict:
    """A stage's `rag:` option; its index defaults to the rag stage's (built before that stage runs)."""
    value = {} if value is True else value
    if not isinstance(value, dict):
        raise QilinError(f"{where}: expected a mapping of options (e.g. `rag: {{k: 3}}`), got {value!r}")
    if value.get("index") is None:
        if recipe.rag is None:
            raise QilinError(f"{where}: no index to retrieve from; add a `rag:` section to the recipe (its index is "
                             "built over the CPT corpus) or give `index:`")
        value = {**value, "index": rag_folder / "index"}
    return value


def _rag_step(recipe: Recipe, folder: Path, data_dir: Path, last: Path, models: dict[str, Path],
              started_from: dict[str, tuple[str, Path, bool]]) -> tuple[str, RunFolder, object]:
    """Qilin-Med-RAG: BM25 over the CPT corpus (METHODS.md 1), the final model evaluated with it; and
    every retrieval-trained stage, with its plain twin, evaluated with it too."""
    from qilin.rag import stage

    rag = dict(recipe.rag)
    model = rag.pop("model", None)
    model = (models.get(model, model) if isinstance(model, str) else model) or last  # a stage's name, or a path
    compare: dict[str, Path] = {}
    for name, (kind, start, with_passages) in started_from.items():
        if with_passages:
            twin = next((n for n, (k, s, p) in started_from.items() if k == kind and s == start and not p), None)
            compare |= ({twin: models[twin]} if twin else {}) | {name: models[name]}
    # the same evaluation as every other stage, with whatever the rag section changes (e.g. its tasks)
    evaluation = qconfig.merge(_eval_values(recipe, data_dir), rag.pop("eval", {}) or {})
    values = {"corpus": [data_dir / "train" / "cpt.jsonl"], "data": data_dir, "model": model, "compare": compare,
              **rag, "eval": evaluation, "out": folder}
    return "rag", RunFolder(folder), qconfig.build(stage.Config, values, "rag")


def _eval_values(recipe: Recipe, data_dir: Path) -> dict:
    """The recipe's evaluation options; the unigram baseline beside each perplexity is fit on the text
    the models were trained on."""
    unigram = [str(data_dir / "train" / f) for f in ("pretrain_general.jsonl", "cpt.jsonl")]
    return {"unigram_train": unigram, **recipe.eval}


def run_recipe(recipe: Recipe, force: bool = False) -> Path:
    """Run every step not yet complete, evaluate each model, write summary.json and the report.

    First the memory plan (qilin.plan): a stage that cannot fit stops the run before anything loads.
    """
    from qilin.eval.suite import EvalConfig
    from qilin.plan.stages import check_fits

    check_fits(recipe, force=force)
    out = Path(recipe.out)
    steps = plan(recipe)
    data_dir = steps[0][1].path
    eval_cfg = qconfig.build(EvalConfig, _eval_values(recipe, data_dir), "eval")
    dist.setup()
    dist.on_main(_write_recipe, recipe, steps)
    for k, (name, run, cfg) in enumerate(steps, 1):
        dist.on_main(_build_index_for, run, cfg, steps[-1])
        if type(cfg).__module__ in IN_EVERY_PROCESS:
            _run_step(name, run, cfg, k, len(steps))
            dist.barrier()
        else:
            dist.on_main(_run_step, name, run, cfg, k, len(steps))
        if name == "base":
            dist.on_main(_count_tokens, data_dir, run)
        if name != "data":
            dist.on_main(_evaluate, name, run, data_dir, eval_cfg)
            dist.on_main(write_summary, out)
    if recipe.report:
        from qilin import report

        dist.on_main(report.write_report, out)
        log.info("report: %s", out / "report.md")
    log.info("peak memory: %.0f MB", _peak_rss_mb())
    return out


def _write_recipe(recipe: Recipe, steps: list[tuple[str, RunFolder, object]]) -> None:
    """recipe.json (the steps and their folders, which summary and report follow) and the resolved recipe."""
    out = Path(recipe.out)
    atomic_write_json(out / "recipe.json", {"name": recipe.name, "seed": recipe.seed,
                                            "steps": [[n, r.path.name] for n, r, _ in steps]})
    atomic_write_text(out / "recipe.yaml", qconfig.dump(recipe))


def _build_index_for(run: RunFolder, cfg: object, last_step: tuple[str, RunFolder, object]) -> None:
    """A stage that trains with retrieved passages from the rag stage's index needs it before the rag
    stage runs: build it now, where the rag stage will find it (and reuse it)."""
    name, rag_run, rag_cfg = last_step
    if name == "rag" and not run.is_complete() and getattr(getattr(cfg, "rag", None), "index", None) == \
            rag_run.path / "index":
        from qilin.rag import stage

        stage.ensure_index(rag_cfg)


def write_summary(out: Path) -> Path:
    """summary.json: {stage: {metric: value}} from every evaluated stage, in recipe order."""
    summary = {}
    for name, folder in read_json(out / "recipe.json")["steps"]:
        metrics_file = out / folder / "eval" / "metrics.json"
        if metrics_file.is_file():
            summary[name] = read_json(metrics_file)["metrics"]
        rows_file = out / folder / "eval" / "rows.json"  # a stage with several rows (e.g. per round)
        if rows_file.is_file():
            summary.update(read_json(rows_file))
    return atomic_write_json(out / "summary.json", summary)


def _run_step(name: str, run: RunFolder, cfg: object, k: int, total: int) -> None:
    if run.is_complete():
        log.info("[%d/%d] %s: complete, skipped (%s)", k, total, name, run.path)
        return
    resume = run.last_checkpoint()
    log.info("[%d/%d] %s: %s%s", k, total, name, "resuming from " + resume.name if resume else "running",
             f" -> {run.path}")
    started = time.time()
    importlib.import_module(type(cfg).__module__).run(cfg)  # every stage config lives beside its run()
    _release_memory()
    log.info("[%d/%d] %s: done in %.0f s (peak memory so far %.0f MB)", k, total, name, time.time() - started,
             _peak_rss_mb())


def _evaluate(name: str, run: RunFolder, data_dir: Path, eval_cfg: object) -> None:
    from qilin.eval.suite import evaluate

    target = run.path / "eval"
    if (target / "metrics.json").is_file():
        return
    log.info("evaluating %s", name)
    evaluate(_model_of(run), data_dir, eval_cfg, target)
    _release_memory()


def _count_tokens(data_dir: Path, base_run: RunFolder) -> None:
    """The data card's token counts need the base tokenizer, which exists only after the base stage."""
    from transformers import AutoTokenizer

    from qilin.data.prepare import add_token_counts

    card = read_json(data_dir / "card.json")
    if card.get("tokenizer"):
        return
    add_token_counts(data_dir, AutoTokenizer.from_pretrained(_model_of(base_run)))


def _model_of(run: RunFolder) -> Path:
    """The model a stage produced: its manifest says (base may point at a user's own folder)."""
    manifest = run.path / "manifest.json"
    if manifest.is_file():
        return Path(read_json(manifest).get("model") or run.model_dir)
    return run.model_dir


def _release_memory() -> None:
    """Hand the memory of a finished stage (models, datasets, optimizer state) back to the system.

    Stages run one after another in this process; without this, glibc keeps the freed arenas and the
    resident size of a whole recipe grows with every stage.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc (macOS, musl): nothing to trim
        pass


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _seeded(values: dict, seed: int) -> dict:
    """Give a stage's training settings the recipe seed unless it names its own."""
    values = dict(values)
    train = dict(values.get("train") or {})
    train.setdefault("seed", seed)
    values["train"] = train
    return values
