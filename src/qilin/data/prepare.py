"""The recipe's `data` stage: bundled sources -> training sets, held-out evaluation sets, data card.

Qilin-Med's ChiMed mix (METHODS.md section 1), scaled to the bundled demo data:

    train/pretrain_general.jsonl  general Chinese text (general preference prompts + chosen answers)
                                  for the tiny base model: the only general text we have
    train/cpt.jsonl               textbook paragraphs, dialogues, CMExam rows, medical SFT
                                  conversations and QA pairs rendered as text, KG triples as text
    train/sft.jsonl               medical SFT conversations, CMExam rows (question + options ->
                                  answer + explanation), dialogues, a modest share of general chat
    train/dpo.jsonl               medical and general preference pairs
    eval/*.jsonl                  held-out CMExam rows, dialogues, textbook paragraphs, general
                                  texts, preference pairs; plus CMMLU-medical dev and CMB-Clin
    card.json, card.md            counts, characters, tokens, sources, contamination removals

Held-out items are drawn by seed, each source with its own generator so that changing one size does
not reshuffle the others. CMExam is held out as WHOLE rows: its explanations name the answer, so a
training row must never carry an evaluation question's explanation (STACK.md item 8). The training
sets are then shuffled and capped, and every training item is checked against every evaluation set
with character 13-grams (overlap.py) and removed if it overlaps; the card lists what went and why.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import qilin
from qilin.config import doc
from qilin.data import overlap, readers
from qilin.data.kg import render_triples
from qilin.errors import QilinError
from qilin.runs import RunFolder, atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json

# name -> (path under data_dir, reader format). The name is each record's `source`.
SOURCES = {
    "cmexam": ("cmexam/val.csv", "cmexam"),
    "dialogue": ("toyhom_dialogue_im/im_sample_6644.csv", "dialogue-csv"),
    "textbook": ("medicalgpt_samples/infectious_disease_textbook.txt", "text"),
    "medical_sft": ("medicalgpt_samples/medical_sft_1k.jsonl", "sharegpt"),
    "medical_qa": ("medicalgpt_samples/rag_medical_qa_87.jsonl", "qa"),
    "medical_pref": ("medicalgpt_samples/medical_reward_pairs_100.jsonl", "preference"),
    "general_pref": ("medicalgpt_samples/general_dpo_zh_500.jsonl", "preference"),
    "kg": ("kg/demo_triples.tsv", "triples"),
    "cmmlu": ("cmmlu_medical/dev", "cmmlu"),
    "cmb_clin": ("cmb_clin/CMB-Clin-qa.json", "cmb-clin"),
}
TRAIN_FILES = ("pretrain_general", "cpt", "sft", "dpo")
EVAL_FILES = ("cmexam", "dialogue", "medical", "general", "preference", "cmmlu", "cmb_clin")
# Headings and one-line captions make a noisy perplexity: held-out paragraphs are real paragraphs.
MIN_EVAL_PARAGRAPH = 80
# What of an evaluation item identifies it for the contamination check (see eval_texts).
EVAL_KEYS = {
    "cmexam": "question; explanation (checked on its own)", "cmmlu": "question", "dialogue": "patient question",
    "medical": "whole paragraph", "general": "whole text", "preference": "prompt",
    "cmb_clin": "case description + questions",
}


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

    sources, skipped = read_sources(data_dir)
    evals, rest = hold_out(sources, cfg)
    train, capped = cap(build_train(rest, sources["kg"]), cfg)
    train, contamination = decontaminate(train, evals, cfg)

    outputs = _write_sets(folder.path, train, evals)
    card = make_card(cfg, train, evals, contamination, capped, skipped)
    _write_card(folder.path, card)
    folder.finish(inputs={"data_dir": data_dir}, seed=cfg.seed, outputs=outputs + ["card.json", "card.md"])
    return folder.path


# ---------------------------------------------------------------- reading and holding out

def read_sources(data_dir: Path) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Every source's records; malformed ones are skipped and named (one bad row must not stop the demo)."""
    records, skipped = {}, {}
    for name, (rel, fmt) in SOURCES.items():
        path = data_dir / rel
        if not path.exists():
            raise QilinError(f"{path}: source '{name}' not found in data_dir {data_dir}")
        notes: list[str] = []
        records[name] = list(readers.READERS[fmt](path, on_error="skip", skipped=notes, source=name))
        if fmt == "dialogue-csv":
            records[name] = [_dialogue_question(r) for r in records[name]]
        if notes:
            skipped[name] = notes
    return records, skipped


def _dialogue_question(r: dict) -> dict:
    """A few Toyhom rows have 无 ("none") as the patient's text and the question only in the title."""
    if len(r["question"]) < 5 and len(r["title"]) > len(r["question"]):
        return {**r, "question": r["title"]}
    return r


def hold_out(sources: dict[str, list[dict]], cfg: Config) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Evaluation sets (in the contract's record shapes) and what each source has left for training."""
    rest = {}
    cmexam, rest["cmexam"] = _draw(sources["cmexam"], [cfg.eval_cmexam], cfg.seed, "cmexam")
    dialogue, rest["dialogue"] = _draw(sources["dialogue"], [cfg.eval_dialogue], cfg.seed, "dialogue")
    medical, rest["textbook"] = _draw(sources["textbook"], [cfg.eval_medical_paragraphs], cfg.seed, "textbook",
                                      lambda r: len(r["text"]) >= MIN_EVAL_PARAGRAPH)
    pref_med, rest["medical_pref"] = _draw(sources["medical_pref"], [cfg.eval_preference_medical], cfg.seed,
                                           "medical_pref")
    # one draw, two disjoint groups: general perplexity texts and general preference pairs
    (general, pref_gen), rest["general_pref"] = _draw(
        sources["general_pref"], [cfg.eval_general, cfg.eval_preference_general], cfg.seed, "general_pref")
    for name in ("medical_sft", "medical_qa"):
        rest[name] = sources[name]
    pick = lambda recs, keys: [{k: r[k] for k in keys} for r in recs]  # noqa: E731
    evals = {
        "cmexam": pick(cmexam[0], ("id", "question", "options", "answer", "explanation", "source")),
        "dialogue": pick(dialogue[0], ("id", "question", "answer", "source")),
        "medical": pick(medical[0], ("id", "text", "source")),
        "general": [{"id": r["id"], "text": _general_text(r), "source": r["source"]} for r in general],
        "preference": pick(pref_med[0] + pref_gen, ("id", "prompt", "chosen", "rejected", "source")),
        "cmmlu": sources["cmmlu"],      # not trained on: checked for contamination, used by evaluation
        "cmb_clin": sources["cmb_clin"],
    }
    return evals, rest


def _draw(records: list[dict], sizes: list[int], seed: int, name: str, eligible=None):
    """Seeded disjoint groups of `sizes` items (in file order) and the remaining records."""
    pool = [r["id"] for r in records if eligible is None or eligible(r)]
    if sum(sizes) > len(pool):
        raise QilinError(f"{name}: {sum(sizes)} items asked for evaluation, only {len(pool)} available")
    random.Random(f"{seed}:{name}").shuffle(pool)  # a str seed is hashed with SHA-512: stable across runs
    groups, start = [], 0
    for size in sizes:
        chosen = set(pool[start:start + size])
        groups.append([r for r in records if r["id"] in chosen])
        start += size
    held = set(pool[:start])
    return groups, [r for r in records if r["id"] not in held]


def _general_text(r: dict) -> str:
    return f"{r['prompt']}\n{r['chosen']}"


# ---------------------------------------------------------------- rendering the training sets

def build_train(rest: dict[str, list[dict]], triples: list[dict]) -> dict[str, list[dict]]:
    """The four training sets; each record keeps an `id` until written, for the contamination report."""
    text = lambda r, t: {"id": r["id"], "text": t, "source": r["source"]}  # noqa: E731
    chat = lambda r, msgs: {"id": r["id"], "messages": msgs, "source": r["source"]}  # noqa: E731
    cpt = ([text(r, r["text"]) for r in rest["textbook"]]
           + [text(r, f"问：{r['question']}\n答：{r['answer']}") for r in rest["dialogue"] + rest["medical_qa"]]
           + [text(r, _cmexam_text(r)) for r in rest["cmexam"]]
           + [text(r, _conversation_text(r["messages"])) for r in rest["medical_sft"]]
           + render_triples(triples, source="kg"))
    sft = ([chat(r, r["messages"]) for r in rest["medical_sft"]]
           + [chat(r, _turns(_cmexam_prompt(r), _cmexam_answer(r))) for r in rest["cmexam"]]
           + [chat(r, _turns(r["question"], r["answer"])) for r in rest["dialogue"]]
           + [chat(r, r.get("history", []) + _turns(r["prompt"], r["chosen"])) for r in rest["general_pref"]])
    dpo = [{k: r[k] for k in ("id", "prompt", "chosen", "rejected", "source")}
           for r in rest["medical_pref"] + rest["general_pref"]]
    general = [text(r, _general_text(r)) for r in rest["general_pref"]]
    return {"pretrain_general": general, "cpt": cpt, "sft": sft, "dpo": dpo}


def _options_text(options: dict) -> str:
    return "\n".join(f"{letter} {text}" for letter, text in options.items())


def _cmexam_prompt(r: dict) -> str:
    return f"{r['question']}\n{_options_text(r['options'])}"


def _cmexam_answer(r: dict) -> str:
    return f"答案：{r['answer']}" + (f"\n解析：{r['explanation']}" if r["explanation"] else "")


def _cmexam_text(r: dict) -> str:
    return f"{_cmexam_prompt(r)}\n{_cmexam_answer(r)}"


def _turns(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _conversation_text(messages: list[dict]) -> str:
    label = {"user": "问", "assistant": "答"}
    return "\n".join(f"{label[m['role']]}：{m['content']}" for m in messages if m["role"] in label)


# ---------------------------------------------------------------- contamination and caps

def decontaminate(train: dict[str, list[dict]], evals: dict[str, list[dict]], cfg: Config):
    """Drop every training item that overlaps any evaluation item; return the kept sets and a report.

    The check repeats on what is kept until nothing overlaps: removing items can push an n-gram under
    the boilerplate threshold and so expose another overlap. The written files thus pass the check.
    """
    index = overlap.build_index(eval_index_items(evals), cfg.ngram)
    flat = [(name, r) for name, recs in train.items() for r in recs]
    matched = overlap.match(("\n".join(contents(r)) for _, r in flat), index)
    removed: list[dict] = []
    while True:
        hits = overlap.check_matched(matched, index, cfg.min_shared, cfg.min_coverage, cfg.max_train_docs)
        if not any(hits):
            break
        for (name, r), h in zip(flat, hits):
            if h:
                removed.append({"file": f"train/{name}.jsonl", "source": r["source"], "id": r["id"],
                                "start": "\n".join(contents(r))[:40], "matches": h[:3]})
        keep = [i for i, h in enumerate(hits) if not h]
        flat, matched = [flat[i] for i in keep], [matched[i] for i in keep]
    train = {name: [r for n, r in flat if n == name] for name in train}
    report = {"method": f"character {cfg.ngram}-grams after NFKC, case folding and removal of whitespace and "
                        f"punctuation; a training item overlaps an evaluation item when they share at least "
                        f"{cfg.min_shared} n-gram(s) covering at least {cfg.min_coverage:.0%} of the item's "
                        f"characters; n-grams in more than {cfg.max_train_docs} training items are ignored "
                        f"as boilerplate",
              "ngram": cfg.ngram, "min_shared": cfg.min_shared, "min_coverage": cfg.min_coverage,
              "max_train_docs": cfg.max_train_docs, "eval_keys": EVAL_KEYS, "removed": removed}
    return train, report


def eval_index_items(evals: dict[str, list[dict]]):
    """(label, id, text) of every evaluation item for overlap.build_index."""
    for name, recs in evals.items():
        for r in recs:
            for label, text in eval_texts(name, r):
                yield label, r["id"], text


def eval_texts(name: str, r: dict) -> list[tuple[str, str]]:
    """The parts of an evaluation item whose presence in training data makes the item contaminated.

    Questions, not answers or options: dialogue answers and option lists reuse stock phrases
    (doctors' sign-offs, "A 肝 B 心 C 脾 D 肺 E 肾") that leak no item and would flag a third of the
    dialogues. A training row with the evaluation question is removed whole, explanation included.
    CMExam explanations are checked too, on their own: sibling questions share explanation blocks
    that state the held-out answer (STACK.md item 8), e.g. a table of "不同部位疼痛的临床意义".
    """
    if name == "cmexam":
        return [("cmexam", r["question"])] + ([("cmexam explanation", r["explanation"])] if r["explanation"] else [])
    if name in ("cmmlu", "dialogue"):
        return [(name, r["question"])]
    if name == "preference":
        return [(name, r["prompt"])]
    if name == "cmb_clin":
        return [(name, "\n".join([r["description"]] + [t["question"] for t in r["turns"]]))]
    return [(name, r["text"])]


def cap(train: dict[str, list[dict]], cfg: Config) -> tuple[dict[str, list[dict]], dict]:
    """Seeded shuffle of each training set, cut to its cap; a uniform sample keeps the source mix.

    Caps apply before the contamination check, which sees exactly the items that get written (its
    boilerplate rule counts n-grams over them): a capped file may end a few items under its cap.
    """
    caps = {"pretrain_general": cfg.max_pretrain_general, "cpt": cfg.max_cpt_docs, "sft": cfg.max_sft,
            "dpo": cfg.max_dpo}
    out, capped = {}, {}
    for name, recs in train.items():
        recs = list(recs)
        random.Random(f"{cfg.seed}:order:{name}").shuffle(recs)  # mixed sources in every packed block
        limit = caps[name]
        if limit is not None and len(recs) > limit:
            capped[f"train/{name}.jsonl"] = {"before": len(recs), "after": limit}
            recs = recs[:limit]
        out[name] = recs
    return out, capped


# ---------------------------------------------------------------- writing

def contents(r: dict) -> list[str]:
    """The strings of a record that a model reads: for characters, tokens and overlap."""
    if "text" in r:
        return [r["text"]]
    if "messages" in r:
        return [m["content"] for m in r["messages"]]
    if "prompt" in r:
        return [r["prompt"], r["chosen"], r["rejected"]]
    if "options" in r:
        return [r["question"], *r["options"].values(), r["answer"], r.get("explanation", "")]
    if "turns" in r:
        return [r["description"]] + [s for t in r["turns"] for s in (t["question"], t["answer"])]
    return [r["question"], r["answer"]]


def _write_sets(root: Path, train: dict[str, list[dict]], evals: dict[str, list[dict]]) -> list[str]:
    """Write train/*.jsonl (without the internal ids: the contract's columns only) and eval/*.jsonl."""
    outputs = []
    for name in TRAIN_FILES:
        atomic_write_jsonl(root / "train" / f"{name}.jsonl", [{k: v for k, v in r.items() if k != "id"}
                                                             for r in train[name]])
        outputs.append(f"train/{name}.jsonl")
    for name in EVAL_FILES:
        atomic_write_jsonl(root / "eval" / f"{name}.jsonl", evals[name])
        outputs.append(f"eval/{name}.jsonl")
    return outputs


def make_card(cfg: Config, train: dict, evals: dict, contamination: dict, capped: dict, skipped: dict) -> dict:
    """The data card as a dict: per file count, characters, tokens (null until a tokenizer exists), sources."""
    files = {}
    for folder, sets in (("train", train), ("eval", evals)):
        for name, recs in sets.items():
            files[f"{folder}/{name}.jsonl"] = {
                "count": len(recs), "characters": sum(len(s) for r in recs for s in contents(r)),
                "tokens": None, "sources": dict(Counter(r["source"] for r in recs))}
    for name in train:
        gone = [x for x in contamination["removed"] if x["file"] == f"train/{name}.jsonl"]
        files[f"train/{name}.jsonl"]["removed_for_contamination"] = {
            "total": len(gone), "by_source": dict(Counter(x["source"] for x in gone)),
            "by_eval_set": dict(Counter(s for x in gone for s in {m["set"] for m in x["matches"]}))}
    return {"stage": "data", "seed": cfg.seed, "data_dir": str(cfg.data_dir), "tokenizer": None,
            "files": files, "capped": capped, "skipped_invalid": skipped, "contamination": contamination}


def _write_card(root: Path, card: dict) -> None:
    atomic_write_json(root / "card.json", card)
    atomic_write_text(root / "card.md", render_card(card))


def render_card(card: dict) -> str:
    """card.md from card.json's dict (so that add_token_counts can rewrite both)."""
    lines = [f"# Data card\n\nSeed {card['seed']}; sources from `{card['data_dir']}` "
             f"(origins and licences: data/SOURCES.md). Tokens: "
             f"{card['tokenizer'] or 'not counted yet (no tokenizer)'}.\n",
             "| file | items | characters | tokens | sources | removed (contamination) |",
             "|---|---:|---:|---:|---|---:|"]
    for path, f in card["files"].items():
        srcs = ", ".join(f"{s} {n}" for s, n in f["sources"].items())
        gone = f.get("removed_for_contamination", {}).get("total", "")
        tokens = f["tokens"] if f["tokens"] is not None else "-"
        lines.append(f"| {path} | {f['count']} | {f['characters']} | {tokens} | {srcs} | {gone} |")
    lines += _card_notes(card)
    return "\n".join(lines) + "\n"


def _card_notes(card: dict) -> list[str]:
    c = card["contamination"]
    out = ["", "## Contamination", "", f"Method: {c['method']}.", "",
           "Evaluation text checked: " + "; ".join(f"{k}: {v}" for k, v in c["eval_keys"].items()) + ".", ""]
    for path, f in card["files"].items():
        r = f.get("removed_for_contamination")
        if r and r["total"]:
            out.append(f"- {path}: {r['total']} removed; by source {r['by_source']}; "
                       f"by evaluation set {r['by_eval_set']}")
    shown = c["removed"][:30]
    if shown:
        out += ["", f"First {len(shown)} of {len(c['removed'])} removed items (all are listed in card.json):", ""]
        out += [f"- {x['file']} {x['id']}: \"{x['start']}\" ~ "
                + ", ".join(f"{m['set']} {m['id']} ({m['shared']} shared, {m['coverage']:.0%} covered)"
                             for m in x["matches"]) for x in shown]
    if card["capped"]:
        out += ["", "## Caps", ""] + [f"- {p}: {v['before']} -> {v['after']}" for p, v in card["capped"].items()]
    if card["skipped_invalid"]:
        out += ["", "## Skipped invalid records", ""]
        out += [f"- {msg}" for msgs in card["skipped_invalid"].values() for msg in msgs]
    return out


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
    _write_card(root, card)
    return card


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
