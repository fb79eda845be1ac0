"""Few-shot generative named entity recognition (ChiMed-GPT's information-extraction evaluation, Tian
et al. 2023, on CCKS-2019 / Yidu-S4K clinical records and ChiMST), scored by entity-level exact match.

The paper publishes the task (few-shot NER, F1) and the datasets but neither its prompt, its shots nor
its output format (github.com/synlp/ChiMed-GPT carries a README and figures only), so the protocol here
is our own and is named so (`type-lines`): the model sees `shots` solved records as earlier chat turns,
then the record to solve, and answers one line per entity type, `类型：实体1、实体2` (`无` for none).

Scoring (the parse rule and the grounding are recorded in every result): a predicted (type, mention)
names EVERY non-overlapping occurrence of the mention in the text (the output has no offsets, so the
model cannot tell occurrences apart); a mention that does not occur in the text is one false positive
(`ungrounded`). Precision, recall and F1 are micro over (type, start, end) spans, and per type; on
spans that BIO tags can hold they equal seqeval's entity-level scores (tests/eval/test_eval_ner.py).

Readers: the official CCKS-2019 format (one JSON object a line: `originalText`, `entities` with
`label_type`, `start_pos`, `end_pos` (end exclusive), `overlap`) and a plain span-JSON format (JSONL:
`id`, `text`, `entities` as `{"type", "start", "end"}` objects or `[type, start, end]` lists, end
exclusive; an optional `mention` must equal the text between the offsets). A span outside its text is
an InputError naming file, line and field.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from qilin.errors import InputError

# CCKS-2019 task 1 (Yidu-S4K): the six entity types, in the order the task lists them.
CCKS2019_TYPES = ("疾病和诊断", "影像检查", "实验室检验", "手术", "药物", "解剖部位")
NONE = "无"
INSTRUCTION = ("请找出下面病历文本中的医学实体，实体类型为：{types}。每种类型输出一行，格式为“类型：实体1、实体2”，"
               "实体必须是原文中的字符串；没有该类型的实体写“{none}”。\n文本：{text}")
PROMPT_TEXT = ("chat template; the first `shots` records of the file as solved earlier turns (user = instruction + "
               "text, assistant = the type lines), then user = '"
               + INSTRUCTION.replace("{none}", NONE).replace("\n", "\\n") + "'")
PARSE_RULE = ("each output line 'TYPE：MENTIONS' (full- or half-width colon; leading '-*· ' stripped) whose TYPE is "
              "one of the task's types; MENTIONS split on 、，,；; and stripped of spaces and quotes; '无' and "
              "empty mentions dropped; other lines ignored (counted: unknown_lines); a (type, mention) marks every "
              "non-overlapping occurrence of the mention in the text (str.find, left to right); a mention absent "
              "from the text is one false positive (ungrounded)")
METRIC = ("entity-level exact match on (type, start, end): micro precision / recall / F1 and per type, x100; "
          "ungrounded mentions count as false positives")
_SPLIT = re.compile(r"[、，,；;]")
_QUOTES = " \t\"'“”‘’「」《》【】[]"


# ---------------------------------------------------------------------------------------- readers

def read_ner(path: str | Path, *, on_error: str = "raise", skipped: list | None = None):
    """Records {id, text, entities: [{type, start, end}]} of a CCKS-2019 file or a span-JSON file
    (told apart by the first record's keys: `originalText` is CCKS-2019)."""
    from qilin.data.parse import _id, _json_object, _jsonl_items, _records

    path = Path(path)

    def parse(raw, line, index):
        obj = _json_object(path, line, raw)
        ccks = "originalText" in obj
        text_key, ent_key = ("originalText", "entities") if ccks else ("text", "entities")
        text = obj.get(text_key)
        if not isinstance(text, str) or not text:
            raise InputError(path, line, text_key, "expected a non-empty string")
        ents = obj.get(ent_key, [])
        if not isinstance(ents, list):
            raise InputError(path, line, ent_key, "expected a list of entities")
        out = [_entity(path, line, f"{ent_key}[{k}]", e, text, ccks) for k, e in enumerate(ents)]
        return {"id": _id(path, line, obj, f"{path.stem}-{index}"), "text": text, "entities": out}

    return _records(path, _jsonl_items(path), parse, on_error, skipped)


def _entity(path: Path, line: int, field: str, e, text: str, ccks: bool) -> dict:
    if ccks:
        keys = ("label_type", "start_pos", "end_pos")
        if not isinstance(e, dict) or not all(k in e for k in keys):
            raise InputError(path, line, field, "expected {label_type, start_pos, end_pos}")
        typ, start, end = (e[k] for k in keys)
    elif isinstance(e, list) and len(e) == 3:
        typ, start, end = e
    elif isinstance(e, dict) and all(k in e for k in ("type", "start", "end")):
        typ, start, end = e["type"], e["start"], e["end"]
    else:
        raise InputError(path, line, field, "expected {type, start, end} or [type, start, end]")
    if not isinstance(typ, str) or not typ.strip():
        raise InputError(path, line, field, f"entity type {typ!r}: expected a non-empty string")
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool) or isinstance(end, bool):
        raise InputError(path, line, field, f"span [{start!r}, {end!r}): offsets must be whole numbers")
    if not 0 <= start < end <= len(text):
        raise InputError(path, line, field, f"span [{start}, {end}) outside its text (length {len(text)}; "
                                            f"end is exclusive)")
    if isinstance(e, dict) and isinstance(e.get("mention"), str) and e["mention"] != text[start:end]:
        raise InputError(path, line, field, f"mention {e['mention']!r} differs from the text at [{start}, {end}): "
                                            f"{text[start:end]!r}")
    return {"type": typ.strip(), "start": start, "end": end}


def load_ner(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    """The evaluated records; the first `cfg.ner_shots` records of the file are the demonstrations
    (attached to every item as `shots`) and are not evaluated. The entity types are those of the
    file (CCKS-2019's order first)."""
    from qilin.eval.loaders import read_items

    rows = read_items(read_ner, path, task, cfg, skipped, None)
    shots, items = rows[:cfg.ner_shots], rows[cfg.ner_shots:]
    if not items:
        raise InputError(path, None, None, f"{len(rows)} records: none left to evaluate after the "
                                           f"{cfg.ner_shots} demonstrations")
    limit = cfg.limit_for(task)
    found = {e["type"] for r in rows for e in r["entities"]}
    types = [t for t in CCKS2019_TYPES if t in found] + sorted(found - set(CCKS2019_TYPES))
    return [{**r, "shots": shots, "types": types} for r in items[:limit]]


# -------------------------------------------------------------------------- prompt, parse, ground

def instruction(text: str, types: list[str]) -> str:
    return INSTRUCTION.format(types="、".join(types), none=NONE, text=text)


def answer_lines(r: dict, types: list[str]) -> str:
    """A record's gold answer in the output format (the demonstrations' assistant turns)."""
    by: dict[str, list[str]] = {t: [] for t in types}
    for e in sorted(r["entities"], key=lambda e: e["start"]):
        mention = r["text"][e["start"]:e["end"]]
        if e["type"] in by and mention not in by[e["type"]]:
            by[e["type"]].append(mention)
    return "\n".join(f"{t}：{'、'.join(ms) or NONE}" for t, ms in by.items())


def conversation(r: dict) -> list[dict]:
    turns = []
    for s in r["shots"]:
        turns += [{"role": "user", "content": instruction(s["text"], r["types"])},
                  {"role": "assistant", "content": answer_lines(s, r["types"])}]
    return turns + [{"role": "user", "content": instruction(r["text"], r["types"])}]


def parse_output(output: str, types: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(distinct (type, mention) pairs in order, lines ignored) by PARSE_RULE."""
    pairs: dict[tuple[str, str], None] = {}
    ignored = 0
    for raw in output.splitlines():
        line = raw.strip().lstrip("-*· ")
        if not line:
            continue
        head, sep, rest = line.replace(":", "：", 1).partition("：")
        if not sep or head.strip() not in types:
            ignored += 1
            continue
        for m in _SPLIT.split(rest):
            m = m.strip(_QUOTES)
            if m and m != NONE:
                pairs[(head.strip(), m)] = None
    return list(pairs), ignored


def ground(text: str, pairs: list[tuple[str, str]]) -> tuple[list[list], list[list[str]]]:
    """(spans [type, start, end] of every non-overlapping occurrence, pairs that never occur)."""
    spans, ungrounded = [], []
    for typ, mention in pairs:
        start, found = text.find(mention), False
        while start >= 0:
            spans.append([typ, start, start + len(mention)])
            found = True
            start = text.find(mention, start + len(mention))
        if not found:
            ungrounded.append([typ, mention])
    return spans, ungrounded


# ------------------------------------------------------------------------------- predict, score

def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    from qilin.model.chat import prompt_text

    prompts = [prompt_text(lm.tokenizer, conversation(r)) for r in rows]
    outputs = lm.generate(prompts, cfg.new_tokens(task), cfg.batch_size)
    lines = []
    for r, p, o in zip(rows, prompts, outputs):
        pairs, ignored = parse_output(o, r["types"])
        spans, ungrounded = ground(r["text"], pairs)
        gold = [[e["type"], e["start"], e["end"]] for e in r["entities"]]
        for proto in protocols:
            lines.append({"task": task, "id": r["id"], "protocol": proto, "prompt": p, "output": o,
                          "types": r["types"], "gold": gold, "predicted": spans, "ungrounded": ungrounded,
                          "unknown_lines": ignored, "shot_ids": [s["id"] for s in r["shots"]]})
    return lines


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """Precision, recall, F1 (x100); 0 where undefined (seqeval's zero_division default gives 0 too)."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": 100 * p, "recall": 100 * r, "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0)}


def counts(lines: list[dict]) -> dict[str, Counter]:
    """Per type (and '' for all): true positives, predictions (spans + ungrounded) and gold spans."""
    c = {"tp": Counter(), "pred": Counter(), "gold": Counter()}
    for x in lines:
        gold = {tuple(g) for g in x["gold"]}
        pred = {tuple(p) for p in x["predicted"]}
        for t, *_ in pred & gold:
            c["tp"][t] += 1
        for t, *_ in pred:
            c["pred"][t] += 1
        for t, _ in x["ungrounded"]:
            c["pred"][t] += 1
        for t, *_ in gold:
            c["gold"][t] += 1
    for k in c:
        c[k][""] = sum(c[k].values())
    return c


def score(lines: list[dict]) -> dict:
    """Micro P/R/F1 over all spans, then f1_<type> (and precision_/recall_) per entity type."""
    c = counts(lines)
    n = len(lines)
    out = {k: {"value": v, "n": n, "tp": c["tp"][""], "predicted": c["pred"][""], "gold": c["gold"][""]}
           for k, v in prf(c["tp"][""], c["pred"][""], c["gold"][""]).items()}
    types = dict.fromkeys(t for x in lines for t in x["types"])
    for t in types:
        for k, v in prf(c["tp"][t], c["pred"][t], c["gold"][t]).items():
            out[f"{k}_{t}"] = {"value": v, "n": c["gold"][t]}
    out["ungrounded"] = {"value": sum(len(x["ungrounded"]) for x in lines), "n": n}
    out["unknown_lines"] = {"value": sum(x["unknown_lines"] for x in lines), "n": n}
    return out
