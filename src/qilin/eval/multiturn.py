"""Multi-turn doctor-patient dialogue (`dialogue-multiturn`; ChiMed-GPT's multi-turn dialogue
evaluation, MedDialog-style conversations): the model answers EACH doctor turn given the REFERENCE
history (the earlier patient turns and the real doctor's answers, never its own), scored by the
BLEU/ROUGE variants of the `dialogue` task (eval/text.py, eval/metrics.py), overall and per turn
position (`bleu1_turn2` = corpus BLEU-1 over every dialogue's 2nd doctor turn; turns after the 4th
together as `turn5plus`).

Input formats:
  MedDialog-CN processed JSON: a list of dialogues, each a list of utterances prefixed `病人：` / `医生：`
  (also `患者：`); JSONL with `dialogue` (the same list) or `utterances` [{"speaker": patient|doctor,
  "text"}] and an optional `id`; qilin's evaluation records {id, turns: [{question, answer}]}.
Consecutive utterances of one speaker are joined by a newline; utterances before the patient first
speaks and a patient's last words without a doctor's answer are dropped (nothing to score).
"""

from __future__ import annotations

from pathlib import Path

from qilin.errors import InputError
from qilin.eval import text

MAX_TURN = 4
PATIENT = ("病人", "患者", "patient")
DOCTOR = ("医生", "doctor")
PROMPT_TEXT = ("chat template; turn k: user = the patient's k-th turn, after the earlier patient turns and the "
               "REFERENCE doctor answers as history; zero-shot")


def read_dialogues(path: str | Path, *, on_error: str = "raise", skipped: list | None = None):
    """Records {id, turns: [{question, answer}]} (see the module docstring for the formats)."""
    from qilin.data.parse import _id, _json_list_items, _json_object, _jsonl_items, _read_text, _records

    path = Path(path)
    if path.suffix.lower() == ".json" or _read_text(path).lstrip().startswith("["):
        items = _json_list_items(path)
    else:
        items = _jsonl_items(path)

    def parse(raw, line, index):
        obj = _json_object(path, line, raw) if isinstance(raw, str) else raw
        ident = _id(path, line, obj, f"{path.stem}-{index}") if isinstance(obj, dict) else f"{path.stem}-{index}"
        if isinstance(obj, dict) and "turns" in obj:
            from qilin.eval.loaders import _check_turns

            problem = _check_turns(obj)
            if problem:
                raise InputError(path, line, *problem)
            return {"id": ident, "turns": obj["turns"]}
        return {"id": ident, "turns": _turns(path, line, _utterances(path, line, obj))}

    return _records(path, items, parse, on_error, skipped)


def _utterances(path: Path, line: int, obj) -> list[tuple[str, str]]:
    """[(role 'patient'|'doctor', text)] from a list of prefixed strings or of {speaker, text}."""
    field = "dialogue"
    if isinstance(obj, dict):
        field = "dialogue" if "dialogue" in obj else "utterances"
        obj = obj.get(field)
    if not isinstance(obj, list) or not obj:
        raise InputError(path, line, field, "expected a non-empty list of utterances")
    out = []
    for k, u in enumerate(obj):
        if isinstance(u, dict):
            who, said = str(u.get("speaker", "")).strip().lower(), u.get("text")
        elif isinstance(u, str):
            who, _, said = u.replace(":", "：", 1).partition("：")
        else:
            who, said = "", None
        role = "patient" if who.strip() in PATIENT else "doctor" if who.strip() in DOCTOR else None
        if role is None or not isinstance(said, str):
            raise InputError(path, line, f"{field}[{k}]", "expected '病人：…' / '医生：…' or {speaker: patient|doctor, "
                                                          "text}")
        out.append((role, said.strip()))
    return out


def _turns(path: Path, line: int, utterances: list[tuple[str, str]]) -> list[dict]:
    merged: list[list[str]] = []  # [role, text] with one speaker's consecutive utterances joined
    for role, said in utterances:
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n" + said
        elif merged or role == "patient":
            merged.append([role, said])
    turns = [{"question": q, "answer": a} for (_, q), (_, a) in zip(merged[0::2], merged[1::2])]
    if not turns:
        raise InputError(path, line, None, "no doctor answer after a patient turn: nothing to score")
    return turns


def load_multiturn(path: Path, cfg, skipped: dict, task: str) -> list[dict]:
    from qilin.eval.loaders import read_items

    return read_items(read_dialogues, path, task, cfg, skipped, cfg.limit_for(task))


def predict(task: str, lm, rows: list[dict], protocols: list[str], cfg) -> list[dict]:
    """eval/text.py's generation and per-item scores; each line also records its doctor-turn position."""
    lines = text.predict(task, lm, rows, protocols, cfg)
    return [{**x, "turn": int(x["id"].rsplit("-", 1)[1])} for x in lines]


def turn_group(k: int) -> str:
    """Turn positions 1..MAX_TURN on their own, later ones together (`turn5plus`): long dialogues are few."""
    return f"turn{k}" if k <= MAX_TURN else f"turn{MAX_TURN + 1}plus"


def score(lines: list[dict]) -> dict:
    """The dialogue task's metrics over every turn, then per turn position (`<metric>_turn<k>`)."""
    out = text.score(lines)
    for group in dict.fromkeys(turn_group(k) for k in sorted({x["turn"] for x in lines})):
        for name, m in text.score([x for x in lines if turn_group(x["turn"]) == group]).items():
            if not name.startswith("distinct"):
                out[f"{name}_{group}"] = m
    return out

