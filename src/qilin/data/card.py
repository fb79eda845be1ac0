"""The data card: card.json (for programs) and card.md (for people), from one dict.

It accounts for every input record, per source:

    read = skipped (malformed, by reason) + held out (per evaluation set) + used for training

and for every training item converted from them, per output file and source:

    converted = empty + too_long + exact_duplicate + near_duplicate + contamination + mix_dropped
                + (written - repeated)

(a knowledge graph's facts are converted into one item per entity, so there `converted` counts
entities). `accounting` lists any equation that does not hold; a correct build has none.
Cleaning is not a fate but a change: items normalised, stripped of HTML, and identifiers scrubbed
(per kind) are counted per source.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from qilin.runs import atomic_write_json, atomic_write_text

EVAL_KEYS = ("multiple-choice: question, and the explanation on its own; QA and dialogues: the question; "
             "CMB-Clin: case description + questions; preference: the prompt; text: the whole text")


def eval_keys_text() -> str:
    return EVAL_KEYS


def make_card(spec, stats: dict, files: dict, mixing: dict, removed: dict, sources_file: str | None,
              seconds: float) -> dict:
    sources = {s.name: _source_entry(s, stats[s.name]) for s in spec.sources}
    for path, entry in files.items():
        if path.startswith("train/"):
            gone = [(s, r) for (o, s, _), r in removed.items() if f"train/{o}.jsonl" == path]
            entry["removed_for_contamination"] = {
                "total": len(gone), "by_source": dict(Counter(s for s, _ in gone)),
                "by_eval_set": dict(Counter(m["set"] for _, r in gone for m in _unique_sets(r["matches"])))}
    c = spec.contamination
    card = {
        "stage": "data", "seed": spec.seed, "sources_file": sources_file, "data_dir": str(spec.base_dir),
        "tokenizer": None, "files": files, "sources": sources, "mixing": mixing,
        "dedup": {"method": f"exact: hash of the normalised text; near: datasketch MinHash ({spec.dedup.num_perm} "
                            f"permutations) over character {spec.dedup.ngram}-grams of the normalised text, "
                            f"estimated Jaccard >= {spec.dedup.threshold}; per output file, across sources, "
                            "first seen kept", "exact": spec.dedup.exact, "near": spec.dedup.near},
        "contamination": {
            "method": f"character {c.ngram}-grams after NFKC, case folding and removal of whitespace and "
                      f"punctuation; a training item overlaps an evaluation item when they share at least "
                      f"{c.min_shared} n-gram(s) covering at least {c.min_coverage:.0%} of the item's characters; "
                      f"n-grams in more than {c.max_train_docs} training items are ignored as boilerplate, "
                      f"unless the shared n-grams, boilerplate included, cover at least {c.whole_coverage:.0%} of "
                      "the item (a copy, however often repeated)",
            "ngram": c.ngram, "min_shared": c.min_shared, "min_coverage": c.min_coverage,
            "max_train_docs": c.max_train_docs, "whole_coverage": c.whole_coverage, "eval_keys": EVAL_KEYS,
            "removed_total": len(removed), "by_benchmark": _by_benchmark(removed),
            "removed": [{"file": f"train/{o}.jsonl", "source": s, **r} for (o, s, _), r in removed.items()]},
        "capped": {f"train/{o}.jsonl": m["capped"] for o, m in mixing.items() if "capped" in m},
        "skipped_invalid": {n: e["skipped"]["messages"] for n, e in sources.items() if e["skipped"]["messages"]},
        "pii": {n: e["cleaning"]["pii"] for n, e in sources.items() if e["cleaning"]["pii"]},
        "build": {"seconds": round(seconds, 2), "input_bytes": sum(e["bytes"] for e in sources.values())},
    }
    card["accounting"] = accounting(card)
    return card


def _source_entry(s, st: dict) -> dict:
    cleaning = st["cleaning"]
    return {
        "path": s.path, "format": s.format, "kind": s.kind, "stages": s.stages, "domain": s.domain,
        "weight": s.weight, "licence": s.licence, "bytes": st["bytes"], "read": st["read"],
        "skipped": {"total": st["skipped"].total, "by_reason": dict(st["skipped"].reasons),
                    "messages": st["skipped"].messages},
        "held_out": dict(st["held_out"]), "training": st["training"],
        **({"kg": dict(st["kg"])} if st["kg"] else {}),
        "cleaning": {"normalised": cleaning["normalised"], "html": cleaning["html"],
                     "pii": {k[4:]: v for k, v in sorted(cleaning.items()) if k.startswith("pii.")}},
        "outputs": {o: {k: c[k] for k in ("converted", "empty", "too_long", "exact_duplicate", "near_duplicate",
                                          "contamination", "mix_dropped", "repeated", "written")}
                    for o, c in st["outputs"].items()},
    }


def _unique_sets(matches: list[dict]) -> list[dict]:
    seen, out = set(), []
    for m in matches:
        if m["set"] not in seen:
            seen.add(m["set"])
            out.append(m)
    return out


def _by_benchmark(removed: dict) -> dict:
    """{evaluation set: {source: training items removed}} (an item matching two sets counts in both)."""
    table: dict[str, Counter] = {}
    for (_, s, _), r in removed.items():
        for m in _unique_sets(r["matches"]):
            table.setdefault(m["set"], Counter())[s] += 1
    return {k: dict(v) for k, v in sorted(table.items())}


def accounting(card: dict) -> list[str]:
    """Every equation of the module docstring that does not hold (empty for a correct build)."""
    problems = []
    for name, e in card["sources"].items():
        held = sum(e["held_out"].values())
        if e["read"] != e["skipped"]["total"] + held + e["training"]:
            problems.append(f"{name}: read {e['read']} != skipped {e['skipped']['total']} + held out {held} "
                            f"+ training {e['training']}")
        for o, c in e["outputs"].items():
            fates = sum(c[k] for k in ("empty", "too_long", "exact_duplicate", "near_duplicate", "contamination",
                                       "mix_dropped")) + c["written"] - c["repeated"]
            if c["converted"] != fates:
                problems.append(f"{name} -> {o}: converted {c['converted']} != fates {fates}")
            expected = e["kg"]["entities"] if "kg" in e else e["training"]
            if c["converted"] != expected:
                problems.append(f"{name} -> {o}: converted {c['converted']} != training items {expected}")
    for path, f in card["files"].items():
        if path.startswith("train/"):
            o = path[len("train/"):-len(".jsonl")]
            written = sum(e["outputs"].get(o, {}).get("written", 0) for e in card["sources"].values())
            if written != f["count"]:
                problems.append(f"{path}: {f['count']} lines but the sources account for {written}")
    return problems


# ---------------------------------------------------------------- writing

def write_card(root: Path, card: dict) -> None:
    atomic_write_json(root / "card.json", card)
    atomic_write_text(root / "card.md", render_card(card))


def render_card(card: dict) -> str:
    """card.md from card.json's dict (so that prepare.add_token_counts can rewrite both)."""
    lines = [f"# Data card\n\nSeed {card['seed']}; sources from `{card.get('sources_file') or card['data_dir']}` "
             f"(origins and licences: data/SOURCES.md). Tokens: "
             f"{card['tokenizer'] or 'not counted yet (no tokenizer)'}.\n",
             "| file | items | characters | tokens | sources | removed (contamination) |",
             "|---|---:|---:|---:|---|---:|"]
    for path, f in card["files"].items():
        srcs = ", ".join(f"{s} {n}" for s, n in f["sources"].items())
        gone = f.get("removed_for_contamination", {}).get("total", "")
        tokens = f["tokens"] if f["tokens"] is not None else "-"
        lines.append(f"| {path} | {f['count']} | {f['characters']} | {tokens} | {srcs} | {gone} |")
    if "sources" in card:
        lines += _source_lines(card)
    lines += _contamination_lines(card)
    return "\n".join(lines) + "\n"


def _source_lines(card: dict) -> list[str]:
    out = ["", "## Sources: every input record", "",
           "| source | kind | domain | licence | read | skipped | held out | training | PII scrubbed | normalised | HTML |",
           "|---|---|---|---|---:|---:|---|---:|---|---:|---:|"]
    for name, e in card["sources"].items():
        held = ", ".join(f"{k} {v}" for k, v in e["held_out"].items()) or "-"
        pii = ", ".join(f"{k} {v}" for k, v in e["cleaning"]["pii"].items()) or "-"
        out.append(f"| {name} | {e['kind']} | {e['domain']} | {e['licence']} | {e['read']} | {e['skipped']['total']} "
                   f"| {held} | {e['training']} | {pii} | {e['cleaning']['normalised']} | {e['cleaning']['html']} |")
    out += ["", "## Training items: what became of them", "",
            "| source | output | converted | empty | over-long | exact dup | near dup | contamination "
            "| mix dropped | repeated | written |", "|---|---|" + "---:|" * 9]
    for name, e in card["sources"].items():
        for o, c in e["outputs"].items():
            out.append(f"| {name} | {o} | {c['converted']} | {c['empty']} | {c['too_long']} | {c['exact_duplicate']} "
                       f"| {c['near_duplicate']} | {c['contamination']} | {c['mix_dropped']} | {c['repeated']} "
                       f"| {c['written']} |")
    kg = [f"- {n}: {e['kg']['facts']} distinct facts ({e['kg']['repeated_facts']} repeated facts merged) -> "
          f"{e['kg']['entities']} entity paragraphs" for n, e in card["sources"].items() if "kg" in e]
    skipped = [f"- {n}: {r}: {k}" for n, e in card["sources"].items() for r, k in e["skipped"]["by_reason"].items()]
    out += (["", "Knowledge graphs:", ""] + kg) if kg else []
    out += (["", "## Skipped malformed records (by reason)", ""] + skipped) if skipped else []
    out += ["", "## Mixing", ""] + [f"- {o}: {m}" for o, m in card["mixing"].items()]
    out += ["", f"Deduplication: {card['dedup']['method']}.",
            "", "Accounting: " + ("every input record is accounted for." if not card["accounting"]
                                  else "PROBLEMS: " + "; ".join(card["accounting"]))]
    return out


def _contamination_lines(card: dict) -> list[str]:
    c = card["contamination"]
    out = ["", "## Contamination", "", f"Method: {c['method']}.", "", f"Evaluation text checked: {c['eval_keys']}.", ""]
    for path, f in card["files"].items():
        r = f.get("removed_for_contamination")
        if r and r["total"]:
            out.append(f"- {path}: {r['total']} removed; by source {r['by_source']}; by evaluation set {r['by_eval_set']}")
    if c.get("by_benchmark"):
        out += ["", "Removed per benchmark and source: " + "; ".join(
            f"{b}: " + ", ".join(f"{s} {n}" for s, n in v.items()) for b, v in c["by_benchmark"].items())]
    shown = c["removed"][:30]
    if shown:
        out += ["", f"First {len(shown)} of {len(c['removed'])} removed items (all are listed in card.json):", ""]
        out += [f"- {x['file']} {x['id']}: \"{x['start']}\" ~ "
                + ", ".join(f"{m['set']} {m['id']} ({m['shared']} shared, {m['coverage']:.0%} covered)"
                            for m in x["matches"]) for x in shown]
    if card.get("capped"):
        out += ["", "## Caps", ""] + [f"- {p}: {v['before']} -> {v['after']}" for p, v in card["capped"].items()]
    return out
