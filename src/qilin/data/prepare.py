"""The recipe's `data` stage: the bundled sources -> training sets, held-out evaluation sets, data card.

Built on the dataset builder (build.py) with the bundled sources file `data/sources.yaml` (or the
`sources.yaml` of a user's `data_dir`, or the bundled one with its paths under that `data_dir`).
This module maps the builder's outputs onto the files the recipe, evaluation and report read
(ARCHITECTURE.md, "Data stage output"):

    train/pretrain_general.jsonl  the pretrain stage's GENERAL-domain items (general preference prompts +
                                  chosen answers): the tiny base model's only general text
    train/cpt.jsonl               the pretrain stage's MEDICAL items: textbook paragraphs, dialogues,
                                  CMExam rows, medical SFT conversations and QA pairs as text, KG as text
    train/sft.jsonl               medical SFT conversations, CMExam rows (question + options -> answer +
                                  explanation), dialogues, a modest share of general chat
    train/dpo.jsonl               medical and general preference pairs
    eval/*.jsonl                  held-out CMExam rows (whole rows: STACK.md item 8), dialogues, textbook
                                  paragraphs, general texts, preference pairs; CMMLU-medical dev, CMB-Clin
    card.json, card.md            the builder's card: every input record accounted for, contamination removals

The fields of `Config` override the sources file: evaluation sizes (by set name), caps (per output)
and the contamination check. The training files carry no `id` (the contract's columns only).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import qilin
from qilin.config import doc
from qilin.data import overlap
from qilin.data.build import build
from qilin.data.card import render_card, write_card
from qilin.data.convert import contents, eval_texts
from qilin.data.sources import Contamination, Output, Spec, load_spec
from qilin.errors import QilinError
from qilin.runs import RunFolder, read_json

TRAIN_FILES = ("pretrain_general", "cpt", "sft", "dpo")
EVAL_FILES = ("cmexam", "dialogue", "medical", "general", "preference", "cmmlu", "cmb_clin")
# Headings and one-line captions make a noisy perplexity: held-out paragraphs are real paragraphs.
MIN_EVAL_PARAGRAPH = 80
__all__ = ["Config", "run", "add_token_counts", "contents", "eval_index_items", "render_card"]


def default_data_dir() -> Path:
    """The repository's bundled `data/` (src/qilin/__init__.py -> parents[2] is the repository root)."""
    return Path(qilin.__file__).resolve().parents[2] / "data"


@dataclass
class Config:
    out: Path = doc("the run folder to write, e.g. runs/qilin-med/00-data")
    data_dir: Path | None = doc("folder with the source files, laid out like the bundled data/ "
                                "(see data/SOURCES.md); default: the repository's data/", None)
    seed: int = doc("seed of the held-out draws, the caps and the order of the training files", 0)
    eval_cmexam: int = doc("CMExam questions held out for evaluation, as whole rows", 200)
    eval_dialogue: int = doc("doctor-patient dialogues held out (BLEU / ROUGE)", 100)
    eval_medical_paragraphs: int = doc(f"textbook paragraphs (>= {MIN_EVAL_PARAGRAPH} characters) held out "
                                       "for medical perplexity", 60)
    eval_general: int = doc("general texts (prompt + chosen answer) held out for general perplexity", 60)
    eval_preference_medical: int = doc("medical preference pairs held out for preference accuracy", 20)
    eval_preference_general: int = doc("general preference pairs held out for preference accuracy", 60)
    max_pretrain_general: int | None = doc("cap on train/pretrain_general.jsonl records; null = all", None)
    max_cpt_docs: int | None = doc("cap on train/cpt.jsonl documents (a seeded sample that keeps the "
                                   "source mix); null = all", None)
    max_sft: int | None = doc("cap on train/sft.jsonl conversations (seeded sample, keeps the mix); "
                              "null = all", 4000)
    max_dpo: int | None = doc("cap on train/dpo.jsonl pairs; null = all", None)
    ngram: int = doc("contamination check: n-gram length in characters", overlap.NGRAM)
    min_shared: int = doc("contamination check: shared n-grams that make a training item overlap an "
                          "evaluation item", 1)
    min_coverage: float = doc("contamination check: fraction of the evaluation item's characters that the "
                              "shared n-grams must cover (0 = any shared n-gram counts)", 0.2)
    max_train_docs: int | None = doc("contamination check: n-grams found in more training items than "
                                     "this are boilerplate and ignored (GPT-3's rule); null = none", 10)
    include: list[str] = doc("optional source groups of the sources file to use, e.g. [fictional]: the "
                             "invented facts of data/fictional/ (the demo's knowledge probes); none by default", [])
    probes: bool = doc("write eval/probe.jsonl: knowledge probes (seen / paraphrase / unseen) from the "
                       "knowledge-graph sources and data_dir's probes.yaml (or the bundled one)", True)


def run(cfg: Config) -> Path:
    """Write the data stage's run folder (see the module docstring); return its path."""
    folder = RunFolder(cfg.out)
    if folder.is_complete():
        return folder.path
    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    if not data_dir.is_dir():
        raise QilinError(f"data_dir {data_dir}: folder not found")
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
    folder.write_config(cfg)
    spec, sources_file = recipe_spec(cfg, data_dir)
    tmp = folder.path / ".build"
    shutil.rmtree(tmp, ignore_errors=True)
    card = build(spec, tmp, on_error="skip", sources_file=str(sources_file))
    for name in ("train", "eval", "card.json", "card.md"):
        target = folder.path / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    tmp.rmdir()
    outputs = list(card["files"]) + ["card.json", "card.md"] + write_probes(cfg, spec, data_dir, folder.path)
    folder.finish(inputs={"data_dir": data_dir, "sources": sources_file}, seed=cfg.seed, outputs=outputs)
    return folder.path


def recipe_spec(cfg: Config, data_dir: Path) -> tuple[Spec, Path]:
    """The sources file with the recipe's outputs and the config's sizes, caps and check settings."""
    own = data_dir / "sources.yaml"
    sources_file = own if own.is_file() else default_data_dir() / "sources.yaml"
    spec = load_spec(sources_file, base={"base_dir": str(data_dir), "include": list(cfg.include)})
    sizes = {"cmexam": cfg.eval_cmexam, "dialogue": cfg.eval_dialogue, "medical": cfg.eval_medical_paragraphs,
             "general": cfg.eval_general}
    for s in spec.sources:
        for hold in s.eval:
            if hold.set == "preference":
                hold.size = cfg.eval_preference_general if s.domain == "general" else cfg.eval_preference_medical
            elif hold.set in sizes:
                hold.size = sizes[hold.set]
            if hold.set == "medical":
                hold.min_chars = max(hold.min_chars, MIN_EVAL_PARAGRAPH)
    outputs = {"pretrain_general": Output("pretrain", ["general"], max_items=cfg.max_pretrain_general),
               "cpt": Output("pretrain", ["medical"], max_items=cfg.max_cpt_docs),
               "sft": Output("sft", max_items=cfg.max_sft), "dpo": Output("preference", max_items=cfg.max_dpo)}
    check = Contamination(cfg.ngram, cfg.min_shared, cfg.min_coverage, cfg.max_train_docs)
    return dataclasses.replace(spec, seed=cfg.seed, outputs=outputs, contamination=check, keep_ids=False,
                               parquet=False), sources_file


def write_probes(cfg: Config, spec: Spec, data_dir: Path, out: Path) -> list[str]:
    """eval/probe.jsonl (qilin.data.probes) when asked for and a probe spec exists; its counts in
    eval/probe_note.json. Returns the files written."""
    from qilin.data.probes import for_data_stage
    from qilin.runs import atomic_write_json, atomic_write_jsonl

    own = data_dir / "probes.yaml"
    path = own if own.is_file() else default_data_dir() / "probes.yaml"
    if not cfg.probes or not path.is_file():
        return []
    items, note = for_data_stage(spec, path, out / "train")
    if not items:
        return []
    atomic_write_jsonl(out / "eval" / "probe.jsonl", items)
    atomic_write_json(out / "eval" / "probe_note.json", {"spec": str(path), "kinds": note})
    return ["eval/probe.jsonl", "eval/probe_note.json"]


def eval_index_items(evals: dict[str, list[dict]]):
    """(label, id, text) of every evaluation item for overlap.build_index (what the builder checks)."""
    for name, recs in evals.items():
        for r in recs:
            for label, text in eval_texts(name, r):
                yield label, r["id"], text


# ---------------------------------------------------------------- tokens, once a tokenizer exists

def add_token_counts(data_folder: str | Path, tokenizer, batch: int = 512) -> dict:
    """Fill each file's token count in the card with `tokenizer` (a Hugging Face tokenizer or any
    callable mapping a list of strings to {"input_ids": [[...], ...]}); rewrite card.json and card.md.

    A record's tokens are the sum over its contents (text; message contents; prompt + chosen +
    rejected; ...), without a chat template: the template's tokens depend on the stage that uses it.
    """
    root = Path(data_folder)
    card = read_json(root / "card.json")
    for path, entry in card["files"].items():
        texts = [s for r in _read_jsonl(root / path) for s in contents(r) if s]
        entry["tokens"] = sum(len(ids) for i in range(0, len(texts), batch)
                              for ids in tokenizer(texts[i:i + batch])["input_ids"])
    card["tokenizer"] = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    write_card(root, card)
    return card


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
