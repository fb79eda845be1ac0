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

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from qilin import config as qconfig
from qilin import dist
from qilin.config import doc
from qilin.eval.tasks import for_tasks
from qilin.errors import QilinError
from qilin.runs import RunFolder, atomic_write_json, atomic_write_text, file_hash, read_json
from qilin.stages import OUTPUTS, STAGES, of_module, recipe_stages

log = logging.getLogger("qilin")

@dataclass
class Recipe:
    name: str = doc("Recipe name; also the default run folder runs/<name>.")
    out: Path | None = doc("Run folder of the whole recipe (default runs/<name>).", None)
    seed: int = doc("Seed for data splits and every stage, unless a stage sets its own.", 42)
    data: dict = doc("Options of the data stage (qilin.data.prepare.Config).", {})
    base: dict = doc("Options of the base stage (qilin.train.base.Config): a user's model dir, or the tiny default.", {})
    stages: list[dict] = doc("Training stages in order; each a mapping with `stage:` (a stage of qilin.stages), "
                             "an optional `name:` (default: the stage; names the folder and the summary row), "
                             "an optional `from:` (`base` or an earlier stage's name: train from that model instead "
                             "of the previous one, e.g. a second path compared with the first) and its options.", [])
    eval: dict = doc("Options of the evaluation after every stage (qilin.eval.tasks.EvalConfig, the same config as `qilin eval`).", {})
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
        if name not in recipe_stages():
            raise QilinError(f"{path}: stages[{i}].stage: {name!r} is not one of {', '.join(recipe_stages())}")
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
                     "corpus": [train_dir / f for f in ("pretrain_general.jsonl", "cpt.jsonl", "sft.jsonl")],
                     "corpus_skip_sources": _optional_sources(data_cfg)}
    base_cfg = qconfig.build(base.Config, _seeded(qconfig.merge(base_defaults, recipe.base), recipe.seed)
                             | {"out": base_run.path}, "base")
    steps.append(("base", base_run, base_cfg))

    # A user's own base model is used in place; the tiny default is written into the base folder.
    outputs = {"policy": Path(recipe.base["model"]) if recipe.base.get("model") else base_run.model_dir}
    models = {"base": outputs["policy"]}  # the policies so far by stage name, for `from:`
    started_from: dict[str, tuple[str, Path, bool]] = {}  # stage name -> (kind, input model, trained with passages)
    rag_folder = out / f"{len(recipe.stages) + 2:02d}-rag"
    for i, spec in enumerate(recipe.stages):
        spec = dict(spec)
        kind = spec.pop("stage")
        name = spec.pop("name", kind)
        where = f"stages[{i}] ({name})"
        record = STAGES[kind]
        start = spec.pop("from", None)
        if start is not None:  # a path that starts again from an earlier model (a comparison from base)
            if start not in models:
                raise QilinError(f"{where}.from: {start!r} is not `base` or an earlier stage ({', '.join(models)})")
            outputs["policy"] = models[start]
        if record.retrieval_training and spec.get("rag") is not None:  # passages from the rag stage's index
            spec["rag"] = _rag_training(recipe, spec["rag"], rag_folder, f"{where}.rag")
        run = RunFolder(out / f"{i + 2:02d}-{name}")
        values = _stage_values(recipe, record, spec, data_run.path, run.path, outputs, where)
        started_from[name] = (kind, values.get("model"), spec.get("rag") is not None)
        steps.append((name, run, qconfig.build(record.config(), values, where)))
        outputs[record.makes] = run.path / OUTPUTS[record.makes]
        if record.makes == "policy":
            models[name] = outputs["policy"]
    if recipe.rag is not None:
        steps.append(_rag_step(recipe, rag_folder, data_run.path, outputs["policy"], models, started_from))
    _check_evaluations(recipe, data_run.path, steps)
    return steps


def _check_evaluations(recipe: Recipe, data_dir: Path, steps: list) -> None:
    """Every evaluation the run will do (after each stage, a stage's own, the rag stage's), checked now."""
    from qilin.eval.tasks import EvalConfig, check_config

    check_config(qconfig.build(EvalConfig, _eval_values(recipe, data_dir), "eval"), "eval")
    for name, _, cfg in steps:
        own = getattr(cfg, "eval", None)
        if isinstance(own, dict) and own:
            check_config(qconfig.build(EvalConfig, own, f"{name}.eval"), f"{name}.eval")


def _stage_values(recipe: Recipe, record, spec: dict, data_dir: Path, out: Path, outputs: dict[str, Path],
                  where: str) -> dict:
    """A recipe stage's Config values: its record's defaults (data file, seed, the earlier outputs it
    needs), then the recipe's options, then its run folder."""
    values = {"data": data_dir / record.data} if record.data else {}
    values |= _seeded(spec, recipe.seed, record.seed)
    for field_name, kind in record.needs.items():
        if kind not in outputs:
            makers = [n for n, s in STAGES.items() if s.makes == kind]
            raise QilinError(f"{where}: needs a {kind} from an earlier stage ({', '.join(makers)}); none before it")
        values.setdefault(field_name, outputs[kind])
    if record.evaluation == "own":  # it evaluates models of its own (rejection: every round's)
        values.setdefault("eval_data", data_dir)
        values["eval"] = qconfig.merge(_eval_values(recipe, data_dir), values.get("eval") or {})
    return values | {"out": out}


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


def _optional_sources(data_cfg) -> list[str]:
    """The sources of the optional groups the data stage includes (the demo's fictional facts): not part
    of what a base model's tokenizer is trained on."""
    from qilin.data import prepare

    if not data_cfg.include:
        return []
    spec, _ = prepare.recipe_spec(data_cfg, Path(data_cfg.data_dir or prepare.default_data_dir()))
    return sorted(s.name for s in spec.sources if s.group)


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
    own = rag.pop("eval", {}) or {}
    evaluation = for_tasks(qconfig.merge(_eval_values(recipe, data_dir), own), own)
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
    from qilin.eval.tasks import EvalConfig
    from qilin.plan.fit import check_fits

    check_fits(recipe, force=force)
    out = Path(recipe.out)
    steps = plan(recipe)
    check_reuse(steps)
    data_dir = steps[0][1].path
    eval_cfg = qconfig.build(EvalConfig, _eval_values(recipe, data_dir), "eval")
    dist.setup()
    dist.on_main(_write_recipe, recipe, steps)
    for k, (name, run, cfg) in enumerate(steps, 1):
        record = record_of(cfg)
        dist.on_main(_build_index_for, run, cfg, steps[-1])
        if record.every_process:  # trains through the Trainer: every process takes part
            _run_step(name, run, cfg, k, len(steps))
            dist.barrier()
        else:
            dist.on_main(_run_step, name, run, cfg, k, len(steps))
        if name == "base":
            dist.on_main(_count_tokens, data_dir, run)
        if record.evaluation != "none":
            dist.on_main(_evaluate, name, run, data_dir, eval_cfg)
        if name != "data":
            dist.on_main(write_summary, out)
    if recipe.report:
        from qilin import report

        dist.on_main(report.write_report, out)
        log.info("report: %s", out / "report.md")
    log.info("peak memory: %.0f MB", _peak_rss_mb())
    return out


def check_reuse(steps: list[tuple[str, RunFolder, object]]) -> None:
    """A complete stage is skipped on a re-run, so it must still be the stage the recipe asks for: refuse
    (before anything runs, nothing deleted) a complete stage whose config differs from the recipe's now,
    whose input files (the user's data, below 256 MB) changed since, or whose inputs lie in an earlier
    stage that is no longer complete (deleted to be redone: what came from it is stale too)."""
    import yaml

    incomplete: list[Path] = []
    for name, run, cfg in steps:
        if not run.is_complete():
            incomplete.append(run.path)
            continue
        saved = run.path / "config.yaml"
        old = _flat(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}) if saved.is_file() else {}
        moved = _mover(run, old.get("out"))
        why = (_config_change({k: [moved(x) for x in v] if isinstance(v, list) else moved(v) for k, v in old.items()},
                              cfg) if old else None) or _input_change(run, incomplete, moved)
        if why:
            raise QilinError(f"{run.path}: complete, but {why}; a re-run would skip it and report its old results. "
                             f"Move or delete {run.path} and the stages after it to redo them, or run into a new "
                             f"folder (out=...)")


def _config_change(old: dict, cfg: object) -> str | None:
    """The settings that differ between the stage's saved config (flattened, paths mapped) and the recipe's
    config now; a setting the recipe leaves unset (null) is one the stage resolved when it ran (e.g. the
    bundled data folder)."""
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in _flat(qconfig.to_dict(cfg)).items()
               if v is not None and old.get(k) != v]
    return f"its config differs from the recipe's now ({'; '.join(changed[:4])})" if changed else None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = str(v) if isinstance(v, Path) else v
    return out


def _mover(run: RunFolder, saved_out):
    """Paths of a run folder that was moved or copied since (its config's `out` is not where it is now):
    the old recipe folder's paths, mapped to the new one."""
    if not saved_out or Path(saved_out) == run.path:
        return lambda v: v
    old_root, new_root = str(Path(saved_out).parent), str(run.path.parent)
    return lambda v: new_root + v[len(old_root):] if isinstance(v, str) and v.startswith(old_root) else v


def _input_change(run: RunFolder, incomplete: list[Path], moved) -> str | None:
    inputs = read_json(run.path / "manifest.json").get("inputs") or {}
    for key, value in inputs.items():
        if not value or not value.get("path"):
            continue
        path = Path(moved(value["path"]))
        parent = next((p for p in incomplete if path == p or p in path.parents), None)
        if parent is not None:
            return f"its input {key} comes from {parent}, which is not complete (being redone)"
        if path.exists() and value.get("hash") and _size(path) < 256 << 20 and file_hash(path) != value["hash"]:
            return f"its input {key} ({path}) changed since it ran"
    return None


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_recipe(recipe: Recipe, steps: list[tuple[str, RunFolder, object]]) -> None:
    """recipe.json (the steps and their folders, which summary and report follow) and the resolved recipe."""
    out = Path(recipe.out)
    atomic_write_json(out / "recipe.json", {"name": recipe.name, "seed": recipe.seed,
                                            "steps": [[n, r.path.name, _kind(c)] for n, r, c in steps]})
    atomic_write_text(out / "recipe.yaml", qconfig.dump(recipe))


def record_of(cfg: object):
    """The stage record of a step, from its config's type (every stage config lives in its stage module)."""
    record = of_module(type(cfg).__module__)
    if record is None:
        raise QilinError(f"{type(cfg).__module__}: not a registered stage (qilin.stages.STAGES)")
    return record


def _kind(cfg: object) -> str:
    """A step's stage kind (its key in qilin.stages.STAGES), recorded in recipe.json for the report."""
    return next(k for k, s in STAGES.items() if s.module == type(cfg).__module__)


def _build_index_for(run: RunFolder, cfg: object, last_step: tuple[str, RunFolder, object]) -> None:
    """A stage that trains with retrieved passages from the rag stage's index needs it before the rag
    stage runs: build it now, where the rag stage will find it (and reuse it)."""
    name, rag_run, rag_cfg = last_step
    if not record_of(cfg).retrieval_training or name != "rag" or run.is_complete():
        return
    if cfg.rag is not None and cfg.rag.index == rag_run.path / "index":
        from qilin.rag import stage

        stage.ensure_index(rag_cfg)


def write_summary(out: Path) -> Path:
    """summary.json: {stage: {metric: value}} from every evaluated stage, in recipe order."""
    summary = {}
    for name, folder, *_ in read_json(out / "recipe.json")["steps"]:
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
    record_of(cfg).run(cfg)  # every stage config lives beside its run()
    _release_memory()
    log.info("[%d/%d] %s: done in %.0f s (peak memory so far %.0f MB)", k, total, name, time.time() - started,
             _peak_rss_mb())


def _evaluate(name: str, run: RunFolder, data_dir: Path, eval_cfg: object) -> None:
    from qilin.eval.results import evaluate_heldout

    target = run.path / "eval"
    if (target / "metrics.json").is_file():
        return
    log.info("evaluating %s", name)
    evaluate_heldout(_model_of(run), data_dir, eval_cfg, target)
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


def _seeded(values: dict, seed: int, where: str = "train.seed") -> dict:
    """Give a stage the recipe seed at `where` (its record's `seed`: "train.seed" = its training settings,
    "seed" = a plain field, "" = none) unless it names its own."""
    values = dict(values)
    if not where:
        return values
    section, _, key = where.rpartition(".")
    target = values
    if section:
        target = values[section] = dict(values.get(section) or {})
    target.setdefault(key, seed)
    return values
