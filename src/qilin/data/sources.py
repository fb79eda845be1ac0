"""The sources file: what `qilin data build` reads, how each source is used, and how the sets are made.

    seed: 42
    sources:
      - name: cmexam                 # each record's `source`
        path: cmexam/val.csv         # a file, a folder or a glob, relative to this file
        format: cmexam               # a reader (readers.READERS); detected when omitted
        kind: multiple-choice        # text | qa | dialogue | multiple-choice | kg | preference
        stages: [pretrain, sft]      # what it feeds: pretrain | sft | preference (and eval, by `eval:`)
        domain: medical              # medical | general: the unit of the mixing ratios
        weight: 1.0                  # sampling rate: 0.5 keeps a seeded half, 2.0 repeats every item twice
        licence: "unconfirmed"
        on_error: skip               # raise | skip; the command line's --on-error when omitted
        eval:                        # held-out evaluation sets drawn from this source (seeded, disjoint)
          - {set: cmexam, size: 200}
    outputs:                         # training files; default: pretrain, sft, preference, one per stage
      sft: {stage: sft, general_ratio: 0.05, max_items: 4000}

Everything is checked when the file is loaded, before anything is read: unknown keys, unknown
formats, kinds, stages, a kind that cannot feed a stage, a missing path; each error names the file and
the source.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass
from pathlib import Path

from qilin import config
from qilin.config import doc
from qilin.data import overlap, readers
from qilin.data.kg import check_templates
from qilin.errors import QilinError

STAGES = ("pretrain", "sft", "preference")
DOMAINS = ("medical", "general")
# kind -> (formats that can carry it, stages it can feed)
KINDS = {
    "text": ({"text"}, {"pretrain"}),
    "qa": ({"qa", "dialogue-csv", "safety-prompts"}, {"pretrain", "sft"}),
    "dialogue": ({"sharegpt", "dialogue-csv", "cmb-clin"}, {"pretrain", "sft"}),
    "multiple-choice": ({"cmexam", "cmmlu"}, {"pretrain", "sft"}),
    "kg": ({"triples", "kg-entities"}, {"pretrain"}),
    "preference": ({"preference"}, {"pretrain", "sft", "preference"}),
}


@dataclass
class Hold:
    set: str = doc("evaluation set: written as eval/<set>.jsonl (several sources may add to one set)")
    size: int | None = doc("items drawn with the seed; null = every item of the source", None, ge=1)
    min_chars: int = doc("only items whose main text has at least this many characters are drawn", 0, ge=0)
    shape: str = doc("'native' keeps the item's fields; 'text' writes {id, text} (preference: prompt + "
                     "chosen answer), e.g. for perplexity", "native")


@dataclass
class Source:
    name: str = doc("the records' `source`; unique")
    path: str = doc("file, folder or glob, relative to the sources file")
    kind: str = doc(f"one of {', '.join(KINDS)}")
    format: str | None = doc(f"reader: one of {', '.join(readers.READERS)}; detected when omitted", None)
    stages: list[str] = doc(f"stages it feeds: {', '.join(STAGES)}; [] = evaluation only", [])
    domain: str = doc("medical | general (mixing ratios)", "medical")
    weight: float = doc("sampling rate of its training items (0.5 = a seeded half, 2 = each twice)", 1.0, ge=0)
    licence: str = doc("licence or terms, copied to the data card", "unknown")
    on_error: str | None = doc("raise | skip malformed records; default: the build's setting", None)
    eval: list[Hold] = doc("held-out evaluation sets drawn from it", [])
    templates: dict = doc("knowledge graphs: per-relation sentence templates with {head}, {relation}, {tail}", {})
    group: str | None = doc("an optional source's group: used only when the build includes the group "
                            "(`include`; e.g. the demo's fictional facts); null = always used", None)


@dataclass
class Output:
    stage: str = doc(f"one of {', '.join(STAGES)}")
    domains: list[str] = doc("domains of the sources it takes", ["medical", "general"])
    general_ratio: float | None = doc("share of general-domain items after mixing (0-1); null = as read", None,
                                      ge=0, le=1)
    max_items: int | None = doc("cap: a seeded uniform sample that keeps the mix; null = all", None, ge=1)


@dataclass
class Dedup:
    exact: bool = doc("drop exact duplicates (after normalisation)", True)
    near: bool = doc("drop near duplicates (MinHash over character n-grams)", True)
    ngram: int = doc("near duplicates: character n-gram length", 5, ge=1)
    num_perm: int = doc("near duplicates: MinHash permutations", 128, ge=2)
    threshold: float = doc("near duplicates: estimated Jaccard similarity that makes a duplicate", 0.8, gt=0, le=1)


@dataclass
class Contamination:
    ngram: int = doc("character n-gram length", overlap.NGRAM, ge=1)
    min_shared: int = doc("shared n-grams that make a training item overlap an evaluation item", 1, ge=1)
    min_coverage: float = doc("fraction of the evaluation item's characters the shared n-grams must cover", 0.2,
                              ge=0, le=1)
    max_train_docs: int | None = doc("n-grams in more training items than this are boilerplate (ignored unless "
                                     "they cover whole_coverage of an item); null = none", 10, ge=1)
    whole_coverage: float = doc("an item covered this much by shared n-grams, boilerplate ones included, overlaps "
                                "however many training items copy it", overlap.WHOLE_COVERAGE, gt=0, le=1)


@dataclass
class Spec:
    sources: list[Source] = doc("the sources, in priority order (a duplicate keeps the first source's item)")
    outputs: dict = doc("training files: name -> {stage, domains, general_ratio, max_items}",
                        lambda: {s: {"stage": s} for s in STAGES})
    seed: int = doc("seed of every draw (held-out sets, weights, mixing, order)", 0)
    min_chars: int = doc("training items shorter than this (characters) are dropped as empty", 1, ge=0)
    max_chars: int = doc("training items longer than this (characters) are dropped as over-long", 20000, ge=1)
    scrub_pii: bool = doc("replace personal identifiers by placeholders (clean.py)", True)
    keep_raw_ids: bool = doc("keep identifiers inside `id` fields as they are (default: scrubbed like the text, "
                             "with a short hash so that ids stay distinct)", False)
    keep_ids: bool = doc("keep each training item's `id` in the training files", True)
    parquet: bool = doc("also write every set as Parquet", True)
    dedup: Dedup = doc("deduplication settings", Dedup)
    contamination: Contamination = doc("contamination check settings", Contamination)
    base_dir: Path | None = doc("folder the source paths are relative to; default: the sources file's", None)
    include: list[str] = doc("optional source groups to use (sources with a `group` not listed here are left out)",
                             [])


def load_spec(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> Spec:
    """Read and check a sources file (or `base` alone when path is None)."""
    spec = config.load(Spec, path, overrides, base)
    where = str(path) if path else "sources"
    if spec.base_dir is None:
        spec = dataclasses.replace(spec, base_dir=Path(path).resolve().parent if path else Path.cwd())
    if not isinstance(spec.outputs, dict) or not spec.outputs:
        raise QilinError(f"{where}: outputs must be a mapping of output name -> {{stage, ...}}")
    spec.outputs = {_file_name(where, "outputs", name): _output(where, name, o) for name, o in spec.outputs.items()}
    groups = {s.group for s in spec.sources if s.group}
    unknown = [g for g in spec.include if g not in groups]
    if unknown:
        raise QilinError(f"{where}: include {', '.join(unknown)}: no source has that group "
                         f"(groups: {', '.join(sorted(groups)) or 'none'})")
    spec.sources = [s for s in spec.sources if not s.group or s.group in spec.include]
    names = [s.name for s in spec.sources]
    if not names:
        raise QilinError(f"{where}: no sources")
    for s in spec.sources:
        _file_name(where, "source name", s.name)
        if names.count(s.name) > 1:
            raise QilinError(f"{where}: source name '{s.name}' is used twice")
        for hold in s.eval:
            _file_name(where, f"source '{s.name}': eval set", hold.set)
        _check_source(where, s, spec)
    return spec


def _file_name(where: str, what: str, name) -> str:
    """Names that become file names (staging/<output>/<source>.jsonl, eval/<set>.jsonl) stay inside --out."""
    if not isinstance(name, str) or not re.fullmatch(r"[^/\\\x00-\x1f:*?\"<>|]+", name) or name.startswith(".") \
            or name != name.strip():
        raise QilinError(f"{where}: {what} {name!r} cannot be a file name (no path separators, no leading dot, no "
                         "control or reserved characters)")
    return name


def _output(where: str, name: str, o) -> Output:
    out = o if isinstance(o, Output) else config.build(Output, o, f"{where}: outputs.{name}")
    if out.stage not in STAGES:
        raise QilinError(f"{where}: outputs.{name}.stage {out.stage!r} is not one of {', '.join(STAGES)}")
    for domain in out.domains:
        if domain not in DOMAINS:
            raise QilinError(f"{where}: outputs.{name}.domains: {domain!r} is not one of {', '.join(DOMAINS)}")
    return out


def _check_source(where: str, s: Source, spec: Spec) -> None:
    at = f"{where}: source '{s.name}'"
    if s.kind not in KINDS:
        raise QilinError(f"{at}: kind {s.kind!r} is not one of {', '.join(KINDS)}")
    files = source_files(s, spec.base_dir, at)
    # a format given applies to every file; otherwise each file's is detected (a glob may mix them)
    s.file_formats = {f: s.format or readers.detect_format(f) for f in files}
    s.format = s.format or ",".join(sorted(set(s.file_formats.values())))
    formats, stages = KINDS[s.kind]
    for fmt in set(s.file_formats.values()):
        if fmt not in readers.READERS:
            raise QilinError(f"{at}: format {fmt!r} is not one of {', '.join(readers.READERS)}")
        if fmt not in formats:
            raise QilinError(f"{at}: format {fmt} cannot carry kind {s.kind} (formats for it: {', '.join(sorted(formats))})")
    for stage in s.stages:
        if stage not in STAGES:
            raise QilinError(f"{at}: stage {stage!r} is not one of {', '.join(STAGES)}")
        if stage not in stages:
            raise QilinError(f"{at}: a {s.kind} source cannot feed {stage} (it can feed {', '.join(sorted(stages))})")
    if not s.stages and not s.eval:
        raise QilinError(f"{at}: feeds no stage and no evaluation set")
    if s.domain not in DOMAINS:
        raise QilinError(f"{at}: domain {s.domain!r} is not one of {', '.join(DOMAINS)}")
    if s.weight < 0:
        raise QilinError(f"{at}: weight must be >= 0")
    if s.on_error not in (None, "raise", "skip"):
        raise QilinError(f"{at}: on_error must be raise or skip")
    if s.eval and s.kind == "kg":
        raise QilinError(f"{at}: a knowledge graph cannot give evaluation items")
    check_templates(s.templates, at)


def source_files(s: Source, base_dir: Path, at: str = "") -> list[Path]:
    """The files of a source: one file, a folder's files (CMMLU: the folder itself), or a glob's matches."""
    path = Path(s.path) if Path(s.path).is_absolute() else base_dir / s.path
    if any(c in s.path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise QilinError(f"{at}: no file matches {path}")
        return files
    if path.is_dir():
        if s.format == "cmmlu" or (s.format is None and s.kind == "multiple-choice"):
            return [path]
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise QilinError(f"{at}: folder {path} has no files")
        return files
    if not path.is_file():
        raise QilinError(f"{at}: {path} " + ("is not a regular file (a FIFO, socket or device)" if path.exists()
                                             else "not found"))
    return [path]
