"""Knowledge probes: did training put facts into the model? (issue 17; METHODS.md section 4)

A probe is a cloze prompt that stops where a fact's object begins ("默维热的病原体是") and the object
itself (the target span, "岚塔螺旋体"), with the objects of other facts of the SAME relation as
distractors. The evaluation (`qilin.eval.probe`) scores the target span's log-probability (the cloze,
LAMA-style) and counts a fact as known when the correct option gets the highest probability of all
options (Ovadia et al., EMNLP 2024). Probes come in three sets, so that a general gain is not read as
injection (Gekhman et al., EMNLP 2024):

    seen        facts in the CPT data, in the wording they were trained in
    paraphrase  the same facts in a wording never trained on (data/probes.yaml `paraphrase`)
    unseen      matched facts never in any training data (`control`): what changes here is not injection

The recipe's data stage writes `eval/probe.jsonl` from the knowledge-graph sources that fed CPT (a
fact is `seen` only if its entity's paragraph is in train/cpt.jsonl: caps may drop some) and the
control files of data/probes.yaml. `qilin probe build` makes the same records from a user's triples
(and control triples, paraphrase templates) or documents.

Record: {"id", "set", "kind", "relation", "head", "prompt", "target", "options": {"A": ..}, "answer"}.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from qilin import config
from qilin.config import doc
from qilin.data.kg import DEFAULT_TEMPLATE, check_templates
from qilin.errors import QilinError

SETS = ("seen", "paraphrase", "unseen")
LETTERS = "ABCDEFGH"


@dataclass
class Control:
    path: str = doc("triples never in any training data (head, relation, tail), relative to the probe file")
    like: str = doc("the knowledge-graph source these facts are matched to: its wording and its objects "
                    "(distractors) are used")
    group: str | None = doc("used only when the data stage includes this source group", None)


@dataclass
class ProbeSpec:
    paraphrase: dict = doc("held-out wording per relation ({head} ... {tail}); never used in training", {})
    control: list[Control] = doc("unseen facts, matched to a seen source", [])
    distractors: int = doc("wrong options per probe, objects of the same relation (fewer when the relation "
                           "has fewer)", 3)
    seed: int = doc("seed of the distractors and the option order", 0)


def load_probe_spec(path: Path) -> ProbeSpec:
    spec = config.load(ProbeSpec, path)
    check_templates(spec.paraphrase, str(path))
    if not 1 <= spec.distractors < len(LETTERS):
        raise QilinError(f"{path}: distractors must lie in 1..{len(LETTERS) - 1}")
    return spec


# ------------------------------------------------------------------------------ building

def cloze(template: str, head: str, relation: str) -> str | None:
    """The prompt of a template up to its object: None when the object comes before the subject."""
    if template.index("{tail}") < template.index("{head}"):
        return None
    return template[:template.index("{tail}")].format(head=head, relation=relation)


def first_facts(triples) -> dict[tuple[str, str], list[str]]:
    """{(head, relation): [tails]} in first-seen order; the probe asks for the FIRST tail (the one
    a KG paragraph writes right after the prompt)."""
    out: dict[tuple[str, str], list[str]] = {}
    for t in triples:
        tails = out.setdefault((t["head"], t["relation"]), [])
        if t["tail"] not in tails:
            tails.append(t["tail"])
    return out


def probe_items(facts: dict, template_of, set_name: str, kind: str, pool: dict[str, list[str]],
                n_wrong: int, rng: random.Random) -> tuple[list[dict], int]:
    """Probes of one set: each fact's cloze in its template, options = the first tail + distractors
    from `pool[relation]` (never another tail of the same fact). Returns (items, facts left out:
    no usable wording, or no distractor)."""
    items, left = [], 0
    for (head, rel), tails in facts.items():
        template = template_of(rel)
        prompt = cloze(template, head, rel) if template else None
        wrong = sorted({t for t in pool.get(rel, []) if t not in tails})
        if not prompt or not wrong:
            left += 1
            continue
        options = [tails[0]] + rng.sample(wrong, min(n_wrong, len(wrong)))
        rng.shuffle(options)
        letters = LETTERS[:len(options)]
        items.append({"id": f"{set_name}-{kind}-{len(items)}", "set": set_name, "kind": kind, "relation": rel,
                      "head": head, "prompt": prompt, "target": tails[0], "options": dict(zip(letters, options)),
                      "answer": letters[options.index(tails[0])]})
    return items, left


def from_triples(seen, control, templates: dict, paraphrase: dict, n_wrong: int = 3, seed: int = 0,
                 kind: str = "kg") -> tuple[list[dict], dict]:
    """Probe records from seen triples (trained in `templates`' wording), control triples (never
    trained on) and held-out `paraphrase` templates; a note of the counts (`left_out` of unseen
    includes control facts whose object never occurs among the seen facts')."""
    rng = random.Random(f"{seed}:probe:{kind}")
    seen_f, control_f = first_facts(seen), first_facts(control)
    # Options are objects that occur in training only: an object never trained on is split into more,
    # rarer tokens, so it would lose to trained ones for that reason alone (seen facts would win and
    # control facts lose by construction). A control fact whose object was never trained is left out.
    pool: dict[str, list[str]] = {}
    for (_, rel), tails in seen_f.items():
        pool[rel] = list(dict.fromkeys(pool.get(rel, []) + tails))
    control_f = {k: v for k, v in control_f.items() if v[0] in pool.get(k[1], [])}
    trained = lambda rel: templates.get(rel, DEFAULT_TEMPLATE)  # noqa: E731
    out, note = [], {}
    for set_name, facts, wording in (("seen", seen_f, trained), ("paraphrase", seen_f, paraphrase.get),
                                     ("unseen", control_f, trained)):
        items, left = probe_items(facts, wording, set_name, kind, pool, n_wrong, rng)
        out += items
        note[set_name] = {"items": len(items), "left_out": left + (len(first_facts(control)) - len(control_f)
                                                                   if set_name == "unseen" else 0)}
    return out, note


SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]")


def from_documents(texts: list[str], set_name: str = "seen", span: int = 4, n_wrong: int = 3,
                   max_items: int = 200, seed: int = 0) -> list[dict]:
    """Cloze probes from documents: in a sampled sentence of each of up to `max_items` documents, the
    last `span` characters before its final punctuation are the target and everything before them
    in the document the prompt; distractors are other probes' targets."""
    rng = random.Random(f"{seed}:probe:documents")
    picks = []
    for k, text in enumerate(texts):
        sentences = [m for m in SENTENCE.finditer(text) if len(m.group().strip()) >= 3 * span]
        if sentences:
            m = rng.choice(sentences)
            cut = m.end() - 1 - span
            picks.append((k, text[:cut], text[cut:m.end() - 1]))
    picks = rng.sample(picks, min(max_items, len(picks)))
    targets = sorted({t for _, _, t in picks})
    out = []
    for k, prompt, target in picks:
        wrong = [t for t in targets if t != target]
        if not wrong:
            continue
        options = [target] + rng.sample(wrong, min(n_wrong, len(wrong)))
        rng.shuffle(options)
        letters = LETTERS[:len(options)]
        out.append({"id": f"{set_name}-document-{len(out)}", "set": set_name, "kind": "document",
                    "relation": "-", "head": f"document {k}", "prompt": prompt, "target": target,
                    "options": dict(zip(letters, options)), "answer": letters[options.index(target)]})
    return out


# ------------------------------------------------------------------ the recipe's data stage

def for_data_stage(spec, probe_spec_path: Path, train_dir: Path) -> tuple[list[dict], dict]:
    """Probe records of a data stage: every knowledge-graph source that fed pretraining gives `seen`
    (the facts whose entity paragraph made it into train/cpt.jsonl) and `paraphrase` probes; the
    control files of the probe spec (whose group is included) give `unseen` ones, checked absent
    from every training file."""
    from qilin.data.readers import read

    pspec = load_probe_spec(probe_spec_path)
    kgs = [s for s in spec.sources if s.kind == "kg" and "pretrain" in s.stages]
    written: dict[str, list[str]] = {}
    for r in _records(train_dir / "cpt.jsonl"):
        written.setdefault(r.get("source", ""), []).append(r["text"])
    kinds: dict[str, dict] = {}  # kind -> {"seen": [triples], "control": [...], "templates": {...}}
    for s in kgs:
        kind = s.group or s.name
        k = kinds.setdefault(kind, {"seen": [], "control": [], "templates": dict(s.templates), "sources": []})
        k["sources"].append(s.name)
        for f in s.file_formats:
            for t in read(f, s.file_formats[f]):
                if any(t["head"] in text and t["tail"] in text for text in written.get(s.name, [])):
                    k["seen"].append(t)
    for c in pspec.control:
        if c.group and c.group not in spec.include:
            continue
        like = next((s for s in kgs if s.name == c.like), None)
        if like is None:
            raise QilinError(f"{probe_spec_path}: control {c.path}: `like` {c.like!r} is not a knowledge-graph "
                             "source that feeds pretraining in this build")
        path = Path(c.path) if Path(c.path).is_absolute() else probe_spec_path.parent / c.path
        kinds[like.group or like.name]["control"] += list(read(path, "triples"))
    out, note = [], {}
    for kind, k in kinds.items():
        items, note[kind] = from_triples(k["seen"], k["control"], k["templates"], pspec.paraphrase,
                                         pspec.distractors, pspec.seed, kind)
        out += items
    _check_unseen(out, train_dir)
    return out, note


def _records(path: Path):
    with open(path, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def _check_unseen(items: list[dict], train_dir: Path) -> None:
    """An `unseen` entity found in any training file would make the control a lie: refuse."""
    heads = {x["head"] for x in items if x["set"] == "unseen"}
    if not heads:
        return
    for path in sorted(train_dir.glob("*.jsonl")):
        for r in _records(path):
            text = json.dumps(r, ensure_ascii=False)
            hit = next((h for h in heads if h in text), None)
            if hit:
                raise QilinError(f"probe control entity {hit!r} occurs in {path}: it cannot be 'unseen'")


# ---------------------------------------------------------------------------- qilin probe build

def add_parser(sub) -> None:
    """`qilin probe build`: probe records from a user's triples (and control triples, paraphrase
    templates) or documents, for `qilin eval --tasks probe --data probe=FILE`."""
    p = sub.add_parser("probe", help="knowledge probes: build probe sets (then: qilin eval --tasks probe)")
    psub = p.add_subparsers(title="probe commands", metavar="COMMAND")
    b = psub.add_parser("build", help="probe records (seen / paraphrase / unseen) from triples or documents",
                        description="Seen probes from triples that were in the training data (in their training "
                                    "wording, --templates), paraphrase probes in held-out wording (--paraphrase), "
                                    "unseen probes from --control triples never trained on; or cloze probes "
                                    "from --documents.")
    b.add_argument("--out", required=True, help="probe JSONL to write")
    b.add_argument("--triples", help="triples in the training data (TSV/CSV/JSONL head, relation, tail)")
    b.add_argument("--templates", help="YAML {relation: template} the triples were trained in "
                                       f"(default {DEFAULT_TEMPLATE!r})")
    b.add_argument("--control", help="matched triples never in any training data: the unseen set")
    b.add_argument("--paraphrase", help="YAML {relation: template}: held-out wording, the paraphrase set")
    b.add_argument("--documents", help="text (one document a line) or JSONL with 'text': cloze probes")
    b.add_argument("--set", default="seen", choices=SETS, help="--documents: the set its probes belong to")
    b.add_argument("--distractors", type=int, default=3, help="wrong options per probe (same relation)")
    b.add_argument("--max-items", type=int, default=200, help="--documents: at most this many probes")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_build)


def _templates(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise QilinError(f"{path}: cannot read templates ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise QilinError(f"{path}: expected a mapping relation -> template string")
    check_templates(data, path)
    return data


def cmd_build(args) -> int:
    from qilin.data.readers import read, read_text
    from qilin.runs import atomic_write_jsonl

    if not 1 <= args.distractors < len(LETTERS):
        raise QilinError(f"--distractors must lie in 1..{len(LETTERS) - 1}")
    if bool(args.triples) == bool(args.documents):
        raise QilinError("probe build: give --triples (with --control / --paraphrase) or --documents")
    if args.documents:
        path = Path(args.documents)
        texts = ([r["text"] for r in _records(path) if isinstance(r.get("text"), str)] if path.suffix == ".jsonl"
                 else [r["text"] for r in read_text(path)])
        items = from_documents(texts, args.set, n_wrong=args.distractors, max_items=args.max_items, seed=args.seed)
    else:
        control = list(read(args.control, "triples")) if args.control else []
        items, _ = from_triples(list(read(args.triples, "triples")), control, _templates(args.templates),
                                _templates(args.paraphrase), args.distractors, args.seed)
    if not items:
        raise QilinError("probe build: no probe could be made (each needs a cloze wording and a distractor)")
    atomic_write_jsonl(args.out, items)
    counts = {s: sum(x["set"] == s for x in items) for s in SETS}
    print(f"{args.out}: {len(items)} probes (" + ", ".join(f"{s} {n}" for s, n in counts.items() if n) + ")")
    return 0
