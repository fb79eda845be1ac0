"""`qilin data build SOURCES.yaml --out DIR`: heterogeneous sources -> stage datasets + data card.

    DIR/train/<output>.jsonl (+ .parquet)   one per output of the sources file (default: pretrain,
                                            sft, preference), TRL column names plus `source` (and `id`)
    DIR/eval/<set>.jsonl (+ .parquet)       held-out evaluation sets
    DIR/card.json, DIR/card.md              every input record accounted for, per source

The passes, each streaming over the sources (nothing is loaded whole except the evaluation sets, a
knowledge graph being grouped by entity, and a JSON-list file such as CMB-Clin):
1. hold out: reservoir-sample each evaluation set from its source (seeded, disjoint groups);
   evaluation-only sources (benchmarks) are read whole here. The contamination index is built from
   every evaluation item (character n-grams, overlap.py).
2. stage: read -> clean (normalise, strip HTML, scrub PII) -> convert to each output's items ->
   drop empty / over-long -> exact and near dedup per output (across sources: the first seen wins)
   -> match against the contamination index -> append to a staging file per (output, source).
3. decontaminate: the matches decide which staged items overlap an evaluation item (the
   boilerplate rule needs the counts over all training items, hence after pass 2).
4. mix and write: per output, seeded counts per source (weights, general-to-medical ratio, cap),
   selection sampling, a random interleave of the sources; JSONL and Parquet side by side.

The folder is built under a temporary name next to DIR and renamed at the end: a failed build
(a malformed record with on_error=raise, an interrupt) leaves nothing half-written in DIR.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from array import array
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path

from qilin.data import overlap, readers
from qilin.data.card import make_card, write_card
from qilin.data.clean import clean_record
from qilin.data.convert import contents, dialogue_question, eval_item, eval_texts, main_text, to_item
from qilin.data.dedup import Deduper
from qilin.data.kg import group_triples, render_entity
from qilin.data.mix import interleave, select, targets
from qilin.data.parse import counting_bytes
from qilin.data.screen import Screen
from qilin.data.sources import Source, Spec, source_files
from qilin.errors import QilinError
from qilin.runs import remove_stale

FATES = ("empty", "too_long", "exact_duplicate", "near_duplicate", "contamination", "mix_dropped")
# False = the previous implementation (one process, datasketch's per-shingle MinHash, every text through
# overlap.match), kept for benchmarks/bench_data.py's same-process ratio and the identical-card test.
FAST = True
PARQUET_BATCH = 10_000
# Staging and output files are written and read in 1 MiB pieces: with Python's 8 KiB default, each line of
# a few KB was a system call of its own (tens of thousands per 100 MB of outputs).
BUFFER = 1 << 20
# zstd at Arrow's default level 1: on the 1 GB benchmark's text it compresses to 64% at 420 MB/s, where
# Parquet's usual snappy gave 94% at 300 MB/s; every Parquet reader in use (Arrow, pandas, polars, DuckDB,
# Hugging Face datasets) reads it.
PARQUET_COMPRESSION = "zstd"


class SkipLog:
    """Malformed records skipped by a reader: counted by reason, the first few kept verbatim."""

    def __init__(self, keep: int = 20):
        self.reasons: Counter = Counter()
        self.messages: list[str] = []
        self.keep = keep

    def note(self, e) -> None:
        self.reasons[f"field '{e.field}': {e.reason}" if e.field else e.reason] += 1
        if len(self.messages) < self.keep:
            self.messages.append(str(e))

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


def build(spec: Spec, out: str | Path, on_error: str = "raise", sources_file: str | None = None,
          workers: int | None = None) -> dict:
    """Build the datasets of `spec` into `out` (which must not exist, or be empty); return the card.
    `workers`: processes for the per-item work; None = one per CPU for inputs over WORKER_BYTES, else 1.
    The result is the same for any number."""
    if on_error not in ("raise", "skip"):
        raise QilinError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if workers is not None and workers < 1:
        raise QilinError(f"workers must be at least 1, not {workers}")
    out = Path(out)
    remove_stale(out)  # what a killed build left behind
    if out.exists() and not out.is_dir():
        raise QilinError(f"{out}: is a file; --out must be a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise QilinError(f"{out}: already exists and is not empty; remove it or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QilinError(f"{out}: cannot create its folder ({e.strerror or e})") from None
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        card = _build(spec, tmp, on_error, sources_file, workers or _auto_workers(spec))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


WORKER_BYTES = 32 << 20  # below this much training input, starting worker processes costs more than it saves


def _auto_workers(spec: Spec) -> int:
    size = sum(_size(f) for s in spec.sources if s.stages for f in _files(s, spec))
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      size // WORKER_BYTES))


def _build(spec: Spec, root: Path, on_error: str, sources_file: str | None, workers: int) -> dict:
    start = time.time()
    stats = {s.name: _new_stats(s, spec) for s in spec.sources}
    evals, held = hold_out(spec, stats, on_error)
    index = overlap.build_index(((label, r["id"], text) for name, items in evals.items() for r in items
                                 for label, text in eval_texts(name, r)), spec.contamination.ngram)
    staging = root / ".staging"
    staged, matched, chars = stage_training(spec, stats, held, index, staging, on_error, workers)
    removed = decontaminate(matched, index, spec)
    copies, mixing = plan(spec, staged, removed)
    removed.update(recheck(spec, copies, matched, index))
    _account(stats, staged, copies, removed)
    files = write_outputs(spec, copies, chars, staging, root)
    for o in mixing:
        mixing[o]["written"] = {s: stats[s]["outputs"][o]["written"] for s in staged[o]}
    files.update(write_evals(spec, evals, root))
    shutil.rmtree(staging)
    card = make_card(spec, stats, files, mixing, removed, sources_file, time.time() - start)
    write_card(root, card)
    return card


def _new_stats(s: Source, spec: Spec) -> dict:
    outs = [o for o, out in spec.outputs.items() if out.stage in s.stages and s.domain in out.domains]
    return {"read": 0, "skipped": SkipLog(), "held_out": Counter(), "training": 0, "cleaning": Counter(),
            "kg": Counter(), "bytes": 0, "outputs": {o: Counter({"converted": 0}) for o in outs}}


def read_source(s: Source, spec: Spec, on_error: str, log: SkipLog | None, stats: dict | None = None):
    """The records of every file of a source, with the source's name; dialogue titles fixed."""
    files = _files(s, spec)
    for f, fmt in files.items():
        if stats is not None:
            stats["bytes"] += _size(f)
        for rec in readers.READERS[fmt](f, on_error=s.on_error or on_error, skipped=log, source=s.name):
            if len(files) > 1:
                rec["id"] = f"{f.stem}/{rec['id']}"
            yield dialogue_question(rec) if fmt == "dialogue-csv" else rec


def _files(s: Source, spec: Spec) -> dict[Path, str]:
    return getattr(s, "file_formats", None) or {f: s.format for f in source_files(s, spec.base_dir)}


def _size(f: Path) -> int:
    return sum(p.stat().st_size for p in ([f] if f.is_file() else f.glob("*.csv")))


@contextmanager
def _reading(what: str, sources: list[Source], spec: Spec):
    """A progress bar through the input bytes of `sources` while they are read (on a terminal); the
    readers report each MiB they read."""
    with _bar(f"qilin data build: {what}", sum(_size(f) for s in sources for f in _files(s, spec)), "B") as bar:
        with counting_bytes(bar.update):
            yield


def _bar(desc: str, total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not sys.stderr.isatty(), leave=False)


# ---------------------------------------------------------------- pass 1: held-out evaluation sets

def hold_out(spec: Spec, stats: dict, on_error: str) -> tuple[dict[str, list[dict]], dict[str, set[int]]]:
    """{set: items} and {source: positions held out}: reservoir samples, seeded per source.

    A source's holds are drawn together as disjoint groups from one sample (so two sets never share an
    item), each group in file order. Positions count the valid records of the source, so pass 2, which
    skips the same malformed records, finds the same items.
    """
    evals: dict[str, list[dict]] = {}
    held: dict[str, set[int]] = {}
    with _reading("held-out sets", [s for s in spec.sources if s.eval], spec):
        for s in spec.sources:
            if s.eval:
                _hold(s, spec, stats, on_error, evals, held)
    return evals, held


def _hold(s: Source, spec: Spec, stats: dict, on_error: str, evals: dict, held: dict) -> None:
    """One source's evaluation sets drawn into `evals`, their positions into `held`."""
    eval_only = not s.stages
    log = stats[s.name]["skipped"] if eval_only else SkipLog()
    picked = _sample(s, spec, on_error, log, stats[s.name] if eval_only else None)
    held[s.name] = {pos for group in picked for pos, _ in group}
    for hold, group in zip(s.eval, picked):
        items = [eval_item(clean_record(r, stats[s.name]["cleaning"], spec.scrub_pii, not spec.keep_raw_ids),
                           hold.shape) for _, r in group]
        evals.setdefault(hold.set, []).extend(items)
        stats[s.name]["held_out"][hold.set] += len(items)


def _sample(s: Source, spec: Spec, on_error: str, log: SkipLog, count: dict | None) -> list[list[tuple[int, dict]]]:
    sizes = [h.size for h in s.eval]
    if None in sizes and len(sizes) > 1:
        raise QilinError(f"source '{s.name}': a hold with size null takes every item; it must be the only one")
    min_chars = max(h.min_chars for h in s.eval)
    k = None if None in sizes else sum(sizes)
    rng = random.Random(f"{spec.seed}:{s.name}")  # a str seed is hashed with SHA-512: stable across runs
    reservoir: list[tuple[int, dict]] = []
    eligible = 0
    for pos, rec in enumerate(read_source(s, spec, on_error, log, count)):
        if count is not None:
            count["read"] += 1
        if len(main_text(rec)) < min_chars:
            continue
        eligible += 1
        if k is None or len(reservoir) < k:
            reservoir.append((pos, rec))
        elif (j := rng.randrange(eligible)) < k:  # Algorithm R: each eligible record kept with p = k / eligible
            reservoir[j] = (pos, rec)
    if count is not None:
        count["read"] += log.total
    if k is None:
        return [reservoir]
    if eligible < k:
        raise QilinError(f"{s.name}: {k} items asked for evaluation, only {eligible} available")
    reservoir.sort(key=lambda x: x[0])
    rng.shuffle(reservoir)
    groups, at = [], 0
    for size in sizes:
        groups.append(sorted(reservoir[at:at + size], key=lambda x: x[0]))
        at += size
    return groups


# ---------------------------------------------------------------- pass 2: clean, convert, dedup, stage

def stage_training(spec: Spec, stats: dict, held: dict, index: dict, staging: Path, on_error: str,
                   workers: int = 1):
    """Write each (output, source)'s surviving items to staging; return their counts, the overlaps and
    their characters. The work on each item alone (cleaning, conversion, encoding, fingerprints, the
    screen) runs in `workers` processes; the decisions that depend on earlier items (dedup) here, in
    file order."""
    dedupers = {o: _deduper(spec) for o in spec.outputs}
    staged: dict[str, dict[str, int]] = {o: {} for o in spec.outputs}
    chars: dict[tuple[str, str], array] = {}
    matched: dict[tuple[str, str, int], tuple[set, str, str]] = {}
    training = [s for s in spec.sources if s.stages]
    with (_Workers(Preparer(spec, Screen(index) if FAST else None), workers if FAST else 1) as pool,
          _reading("training sources", training, spec)):
        for s in spec.sources:
            if not s.stages:
                continue
            st = stats[s.name]
            outs = list(st["outputs"])
            files = {o: open(_staging_file(staging, o, s.name), "wb", buffering=BUFFER) for o in outs}
            try:
                for o in outs:
                    staged[o][s.name] = 0
                    chars[(o, s.name)] = array("Q")
                records = _training_records(s, spec, st, held.get(s.name, set()), on_error, pool.cleaned)
                for cleaning, prepared in pool.map("chunk", records, outs, s.kind != "kg"):
                    st["cleaning"].update(cleaning)
                    kept: dict[str, list[bytes]] = {o: [] for o in outs}
                    for per_output in prepared:
                        for o, prep in zip(outs, per_output):
                            _stage(prep, o, s.name, st, dedupers[o], index, kept[o], staged, chars, matched)
                    for o in outs:
                        files[o].write(b"".join(kept[o]))
            finally:
                for f in files.values():
                    f.close()
    return staged, matched, chars


def _stage(prep: tuple, o: str, source: str, st: dict, dedup: Deduper, index: dict, kept: list[bytes],
           staged: dict, chars: dict, matched: dict) -> None:
    """One prepared item: counted, dropped (its fate counted) or its line kept for the staging file."""
    fate, fingerprint, screened, line, n, item_id, text = prep
    st["outputs"][o]["converted"] += 1
    if fate is None and fingerprint is not None:
        dup = dedup.decide(fingerprint)
        fate = f"{dup}_duplicate" if dup else None
    if fate:
        st["outputs"][o][fate] += 1
        return
    found = overlap.match([text], index)[0] if screened else set()
    if found:
        matched[(o, source, staged[o][source])] = (found, item_id, text[:40])
    kept.append(line)
    chars[(o, source)].append(n)
    staged[o][source] += 1


def _deduper(spec: Spec) -> Deduper:
    d = spec.dedup
    return Deduper(d.exact, d.near, d.ngram, d.num_perm, d.threshold, reference=not FAST)


class Preparer:
    """The builder's per-item work, which depends on nothing seen before: run in worker processes."""

    def __init__(self, spec: Spec, screen: Screen | None):
        self.spec, self.screen, self.fingerprints = spec, screen, _deduper(spec)

    def chunk(self, records: list[dict], outs: list[str], clean: bool) -> tuple[Counter, list[list[tuple]]]:
        """(what cleaning changed, for each record a prepared item per output)."""
        cleaning, records = self.clean(records) if clean else (Counter(), records)
        stages = [self.spec.outputs[o].stage for o in outs]
        return cleaning, [[self.item(stage, rec) for stage in stages] for rec in records]

    def clean(self, records: list[dict]) -> tuple[Counter, list[dict]]:
        """(what cleaning changed, the records cleaned)."""
        spec, cleaning = self.spec, Counter()
        return cleaning, [clean_record(r, cleaning, spec.scrub_pii, not spec.keep_raw_ids) for r in records]

    def item(self, stage: str, rec: dict) -> tuple:
        """(size fate, dedup fingerprint, whether it may overlap an evaluation item, its JSON line,
        characters, id, text); the text only where the contamination match needs it."""
        spec = self.spec
        item = to_item(stage, rec)
        parts = contents(item)
        n = sum(len(p) for p in parts)
        if n < spec.min_chars or not all(p.strip() for p in parts):
            return "empty", None, False, None, n, None, None
        if n > spec.max_chars:
            return "too_long", None, False, None, n, None, None
        text = "\n".join(parts)
        norm = overlap.normalize(text)  # once, for the fingerprint and the screen
        fingerprint = self.fingerprints.fingerprint(norm) if spec.dedup.exact or spec.dedup.near else None
        screened = self.screen.may_match(norm) if self.screen else True
        written = item if spec.keep_ids else {k: v for k, v in item.items() if k != "id"}
        line = (json.dumps(written, ensure_ascii=False) + "\n").encode("utf-8")  # as it will be written
        return None, fingerprint, screened, line, n, item["id"], text if screened else None


CHUNK = 256  # records per task sent to a worker
_PREPARER: Preparer | None = None  # a worker process's own


class _Workers:
    """`map(method, records, *args)` -> the results of a Preparer method on consecutive chunks of records,
    in order: in this process (workers=1) or in a pool, with at most a few chunks in flight (records are
    read as they are needed, not all at once)."""

    def __init__(self, preparer: Preparer, workers: int):
        self.preparer, self.workers, self.pool = preparer, workers, None

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self.pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.preparer,))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, method: str, records, *args):
        chunks = _chunks(records, CHUNK)
        if self.pool is None:
            yield from (getattr(self.preparer, method)(c, *args) for c in chunks)
            return
        pending: deque = deque()
        for c in chunks:
            pending.append(self.pool.apply_async(_work, (method, c, *args)))
            if len(pending) > 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def cleaned(self, records, stats: Counter):
        """The records cleaned, in order; what cleaning changed counted in `stats`."""
        for cleaning, chunk in self.map("clean", records):
            stats.update(cleaning)
            yield from chunk


def _init_worker(preparer: Preparer) -> None:
    """Workers ignore Ctrl-C (a terminal sends it to the whole process group): the parent alone stops,
    ending the pool, instead of waiting for a chunk that a worker died in."""
    import signal

    global _PREPARER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PREPARER = preparer


def _work(method: str, records: list[dict], *args):
    return getattr(_PREPARER, method)(records, *args)


def _chunks(items, size: int):
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _staging_file(staging: Path, output: str, source: str) -> Path:
    path = staging / output / f"{source}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _training_records(s: Source, spec: Spec, st: dict, held: set[int], on_error: str, cleaned):
    """The records of a source not held out, as read (Preparer cleans them); a knowledge graph as one
    record per entity, from its triples cleaned by `cleaned(records, stats)` before they are grouped."""
    records = read_source(s, spec, on_error, st["skipped"], st)
    if s.kind == "kg":
        yield from _kg_records(s, st, records, cleaned)
        return
    for pos, rec in enumerate(records):
        st["read"] += 1
        if pos in held:
            continue
        st["training"] += 1
        yield rec
    st["read"] += st["skipped"].total


def _kg_records(s: Source, st: dict, records, cleaned):
    """Triples (or entity records) grouped by head entity in memory, then one paragraph each."""
    def counted():
        for rec in records:
            st["read"] += 1
            st["training"] += 1
            yield rec

    def facts():
        for rec in cleaned(counted(), st["cleaning"]):
            if "relations" in rec:
                yield from ({"head": rec["entity"], "relation": r, "tail": t}
                            for r, tails in rec["relations"].items() for t in tails)
            else:
                yield rec

    entities, repeated = group_triples(facts())
    st["read"] += st["skipped"].total
    st["kg"].update(entities=len(entities), repeated_facts=repeated,
                    facts=sum(len(t) for rels in entities.values() for t in rels.values()))
    for head, relations in entities.items():
        yield render_entity(head, relations, s.name, s.templates)


# ---------------------------------------------------------------- pass 3: contamination

def decontaminate(matched: dict, index: dict, spec: Spec, keys=None) -> dict[tuple[str, str, int], dict]:
    """Staged items (all, or `keys`) that overlap an evaluation item -> {"id", "start", "matches"}.

    The check repeats on what is kept until nothing overlaps: removing items can push an n-gram under
    the boilerplate threshold and so expose another overlap. The written files thus pass the check.
    """
    c = spec.contamination
    keys = list(matched if keys is None else keys)
    removed = {}
    while keys:
        hits = overlap.check_matched([matched[k][0] for k in keys], index, c.min_shared, c.min_coverage,
                                     c.max_train_docs, c.whole_coverage)
        if not any(hits):
            break
        for k, h in zip(keys, hits):
            if h:
                removed[k] = {"id": matched[k][1], "start": matched[k][2], "matches": h[:3]}
        keys = [k for k, h in zip(keys, hits) if not h]
    return removed


# ---------------------------------------------------------------- pass 4: mix and write

def plan(spec: Spec, staged: dict, removed: dict) -> tuple[dict, dict]:
    """{(output, source): bytearray of copies per staged item}, and the mixing notes per output.

    Selection sampling needs only counts and the seed, so the whole mix is decided before writing;
    a bytearray per source (one byte per item) is the only memory it takes.
    """
    weights = {s.name: s.weight for s in spec.sources}
    domains = {s.name: s.domain for s in spec.sources}
    copies, notes = {}, {}
    for o, out in spec.outputs.items():
        gone: dict[str, set[int]] = {s: set() for s in staged[o]}
        for (oo, ss, pos) in removed:
            if oo == o:
                gone[ss].add(pos)
        counts = {s: n - len(gone[s]) for s, n in staged[o].items()}
        want, note = targets(counts, weights, domains, out.general_ratio, out.max_items)
        notes[o] = {"stage": out.stage, "domains": out.domains, **note}
        for s, n in staged[o].items():
            arr = bytearray(n)
            alive = [i for i in range(n) if i not in gone[s]] if gone[s] else range(n)
            rng, k = random.Random(f"{spec.seed}:mix:{o}:{s}"), want[s]
            while k > 0 and counts[s] > 0:  # whole passes while k exceeds the items, then a sample
                take = min(counts[s], k)
                for i, chosen in zip(alive, select(counts[s], take, rng)):
                    arr[i] += chosen
                k -= take
            copies[(o, s)] = arr
    return copies, notes


def recheck(spec: Spec, copies: dict, matched: dict, index: dict) -> dict:
    """The contamination check again on exactly the items to be written (their boilerplate counts
    differ from the staged ones' once caps and ratios sample them); newly overlapping items are dropped."""
    keys = [k for k in matched if copies[(k[0], k[1])][k[2]]]
    again = decontaminate(matched, index, spec, keys)
    for (o, s, pos) in again:
        copies[(o, s)][pos] = 0
    return again


def write_outputs(spec: Spec, copies: dict, chars: dict, staging: Path, root: Path) -> dict:
    """Each training file: the planned copies of every source, interleaved at random (seeded).
    The staged lines are written as they are (they were encoded once, when staged), PARQUET_BATCH at a
    time; each such block becomes a row group of the Parquet file in a thread (Arrow works without the
    GIL) while the next block is written."""
    files = {}
    total = sum(sum(arr) for arr in copies.values())
    with _arrow_pool(), _bar("qilin data build: writing", total, " items") as bar:
        for o, out in spec.outputs.items():
            streams = {}
            for (oo, s), arr in copies.items():
                if oo == o:
                    streams[s] = (sum(arr), _source_lines(staging / o / f"{s}.jsonl", s, arr, chars[(o, s)]))
            lines = interleave(streams, random.Random(f"{spec.seed}:order:{o}"))
            stem = root / "train" / o
            with _ParquetRows(stem, _schema(out.stage, spec.keep_ids), spec.parquet) as parquet:
                files[f"train/{o}.jsonl"] = _write_lines(stem, lines, parquet, bar)
    return files


def _source_lines(path: Path, source: str, copies: bytearray, chars: array):
    """(source, line, characters) of a staged source, pass p yielding the items with more than p copies
    (repeats stay apart)."""
    for p in range(max(copies, default=0)):
        with open(path, "rb", buffering=BUFFER) as f:
            for pos, line in enumerate(f):
                if copies[pos] > p:
                    yield source, line, chars[pos]


def _write_lines(stem: Path, lines, parquet: "_ParquetRows", bar=None) -> dict:
    """Write (source, JSON line in UTF-8, characters) to stem.jsonl, each block of PARQUET_BATCH lines
    also to `parquet` (in pieces of PIECE lines: a few MB, which the allocator reuses; a whole block is
    tens of MB, each mapped and zeroed afresh); return (count, characters, sources)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    count, total, sources, piece, block = 0, 0, Counter(), [], []
    with open(stem.with_suffix(".jsonl"), "wb", buffering=BUFFER) as f:
        for source, line, n in lines:
            f.write(line)
            piece.append(line)
            count += 1
            total += n
            sources[source] += 1
            if len(piece) == PIECE:
                block.append(b"".join(piece))
                piece = []
                if bar is not None:
                    bar.update(PIECE)
                if len(block) * PIECE == PARQUET_BATCH:
                    parquet.add(block)
                    block = []
        parquet.add(block + [b"".join(piece)])
    if bar is not None:
        bar.update(len(piece))
    return {"count": count, "characters": total, "tokens": None, "sources": dict(sources)}


PIECE = 1_000  # lines per buffer handed to Arrow; PARQUET_BATCH is a multiple of it


class _ParquetRows:
    """stem.parquet, one row group per block of JSON lines given to `add`, each parsed by Arrow's JSON
    reader (C++; decoding each line in Python was a fifth of the build) and written in a background
    thread, at most two blocks behind the caller. Off (`enabled` False): `add` does nothing."""

    def __init__(self, stem: Path, schema, enabled: bool):
        self.stem, self.schema, self.enabled = stem, schema, enabled
        self.writer, self.pending, self.thread = None, deque(), None

    def __enter__(self):
        if self.enabled:
            from concurrent.futures import ThreadPoolExecutor

            self.thread = ThreadPoolExecutor(1)
        return self

    def add(self, pieces: list[bytes]) -> None:
        """One row group: the JSON lines of `pieces`, in order."""
        if self.enabled and any(pieces):
            self.pending.append(self.thread.submit(self._write, pieces))
            while len(self.pending) > 2:
                self.pending.popleft().result()  # raises what the conversion raised

    def _write(self, pieces: list[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        parse = pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error")
        tables = [pj.read_json(pa.BufferReader(p), read_options=pj.ReadOptions(block_size=len(p) + 1),
                               parse_options=parse) for p in pieces if p]
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.stem.with_suffix(".parquet"), self.schema,
                                           compression=PARQUET_COMPRESSION)
        self.writer.write_table(pa.concat_tables(tables).combine_chunks(), row_group_size=PARQUET_BATCH)

    def __exit__(self, *exc):
        if not self.enabled:
            return
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.thread.shutdown(cancel_futures=True)
            if self.writer is not None:
                self.writer.close()
        if exc[0] is None and self.writer is None:  # no rows: an empty file with the stage's schema
            _write_set(self.stem, [], self.schema, parquet=True)


@contextmanager
def _arrow_pool():
    """Arrow's jemalloc pool (where the wheel has it) as the default while a Parquet file is made.
    Arrow's usual mimalloc returns the blocks of each parsed batch to the system, and taking them back
    costs a page fault and a zeroed (huge) page each time: on the 101 MB benchmark that was half of the
    write pass (2.0 s, 1.0 s with jemalloc, which keeps them for the next batch)."""
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowException):
        yield
        return
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)  # buffers remember their pool: anything made meanwhile elsewhere stays valid
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def _account(stats: dict, staged: dict, copies: dict, removed: dict) -> None:
    """Fates after mixing: contamination, mix_dropped, repeated, written per (output, source)."""
    for (o, s, _) in removed:
        stats[s]["outputs"][o]["contamination"] += 1
    for (o, s), arr in copies.items():
        c = stats[s]["outputs"][o]
        gone = sum(1 for (oo, ss, _) in removed if oo == o and ss == s)
        c["written"] = sum(arr)
        c["repeated"] = sum(x - 1 for x in arr if x > 1)
        c["mix_dropped"] = staged[o][s] - gone - sum(1 for x in arr if x)


def _write_set(stem: Path, items, schema, parquet: bool) -> dict:
    """Write items to stem.jsonl (and stem.parquet, in batches); return count, characters, sources."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stem.parent.mkdir(parents=True, exist_ok=True)
    count, chars, sources = 0, 0, Counter()
    writer, batch = None, []
    with open(stem.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
            chars += sum(len(s) for s in contents(item))
            sources[item["source"]] += 1
            if parquet:
                batch.append(item)
                if len(batch) >= PARQUET_BATCH and schema is not None:
                    writer = _flush(batch, writer, stem, schema, final=False)
        if parquet:
            writer = _flush(batch, writer, stem, schema, final=True)
    if parquet and writer is None:  # no rows: an empty file with the stage's schema
        pq.write_table(pa.Table.from_pylist([], schema=schema or pa.schema([("source", pa.string())])),
                       stem.with_suffix(".parquet"), compression=PARQUET_COMPRESSION)
    return {"count": count, "characters": chars, "tokens": None, "sources": dict(sources)}


def _flush(batch: list, writer, stem: Path, schema, final: bool):
    """Training sets stream in batches under a fixed schema; an evaluation set (no fixed schema: option
    letters vary) is written in one piece at the end so that its schema covers every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if schema is None and not final:
        return writer
    if batch:
        table = pa.Table.from_pylist(batch, schema=schema)
        if writer is None:
            writer = pq.ParquetWriter(stem.with_suffix(".parquet"), table.schema, compression=PARQUET_COMPRESSION)
        writer.write_table(table)
        batch.clear()
    if final and writer is not None:
        writer.close()
    return writer


def _schema(stage: str, keep_ids: bool):
    import pyarrow as pa

    body = {"pretrain": [("text", pa.string())],
            "sft": [("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))],
            "preference": [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())]}[stage]
    return pa.schema(([("id", pa.string())] if keep_ids else []) + body + [("source", pa.string())])


def write_evals(spec: Spec, evals: dict[str, list[dict]], root: Path) -> dict:
    return {f"eval/{name}.jsonl": _write_set(root / "eval" / name, items, None, spec.parquet)
            for name, items in evals.items()}

