"""An LLM judge for CMB-Clin answers through any OpenAI-compatible endpoint (`--judge URL`).

CMB-Clin's official score (FreedomIntelligence/CMB, README.md "CMB-Clin GPT-4 evaluation Prompt",
commit 6c8ece46097dae736c6805dd3b831e1a38c08971; METHODS.md 4) is GPT-4 rating each answer 1-5 on
four criteria: fluency, relevance, completeness and proficiency in medicine, given the case
description, the earlier conversation, the question, the reference solution and the model's answer,
replying with JSON only.

Two templates, two protocol names (docs/PROTOCOLS.md):
- `cmb-clin-judge`: the README's prompt VERBATIM. It is not shipped here (it is the CMB authors'
  text); a user saves it to a file and passes it, and we accept it as official only when its
  normalised text has the SHA-256 below (of the README's code block at that commit), so a prompt
  that differs in any word is never reported under the official name.
- `cmb-clin-rubric` (ours, the default): our own wording of the same four criteria and 1-5 scales,
  the same five inputs and the same JSON reply. Not the official prompt; numbers from it are not
  the published ones.

Plain `urllib` (no client library): one POST to `<URL>/chat/completions` per answer, temperature 0.
A reply without all four integer ratings is kept as unparsed (None ratings), never guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from qilin.errors import InputError, QilinError

CMB_CLIN_CRITERIA = ("fluency", "relevance", "completeness", "proficiency")
TEMPLATE_FIELDS = ("description", "history", "question", "solution", "answer")

# SHA-256 of the README's judge prompt (the code block under "CMB-Clin GPT-4 evaluation Prompt"),
# normalised by `normalise_template`. A fingerprint to recognise the official text, not a copy of it.
OFFICIAL_TEMPLATE_SHA256 = "98f8f90d57524d2dfd8eaa1d03f0e451295e5c63c99c79fd8da997815ce6aed9"

# Our wording of the rubric: the criteria and their 1-5 scales as the README defines them.
QILIN_RUBRIC_TEMPLATE = """你是一名临床医学评审专家，负责给AI医生的回答打分。请根据病例、此前的对话、问题和参考答案，从四个维度各给出1到5的整数分：
流畅性(fluency)：1=支离破碎无法阅读；2=大部分不通顺，只有少量可读内容；3=基本通顺但用词贫乏；4=能连贯地表达复杂内容；5=与人类专家同样流畅。
相关性(relevance)：1=与问题无关；2=略有关联但大多离题；3=相关但不够聚焦或缺少关键细节；4=高度相关，覆盖问题的主要方面；5=完全切题、精准回应问题。
完整性(completeness)：1=极不完整；2=几乎不完整，信息很少；3=中等完整，有部分信息；4=大部分完整，给出了多数信息；5=完全完整，信息齐全。
医学专业性(proficiency)：1=只用日常语言，没有医学术语；2=有一些医学知识但缺乏深入细节；3=能清楚地表达中等复杂度的医学信息；4=熟练使用医学术语，但细节上有小错误；5=所给医学知识完全正确。

【病例】
{description}
【此前的对话（可能为空）】
{history}
【问题】
{question}
【参考答案】
{solution}
【AI医生的回答】
{answer}

只输出一个JSON对象，不要输出其他内容，例如：{"fluency": 3, "relevance": 3, "completeness": 3, "proficiency": 3}"""

_FIELD = re.compile(r"\{\s*(" + "|".join(TEMPLATE_FIELDS) + r")\s*\}")


def normalise_template(text: str) -> str:
    """Line endings to \\n, trailing spaces and surrounding blank lines removed (copy-paste noise)."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n")).strip()


def is_official_template(text: str) -> bool:
    return hashlib.sha256(normalise_template(text).encode("utf-8")).hexdigest() == OFFICIAL_TEMPLATE_SHA256


def load_template(path: str | Path | None) -> tuple[str, str]:
    """(template, protocol name): ours without a file; a user's file is `cmb-clin-judge` only if it
    is the official text, else `cmb-clin-judge-custom`. It must hold all five fields, written
    `{description}` or `{ description }` (the README's spelling)."""
    if path is None:
        return QILIN_RUBRIC_TEMPLATE, "cmb-clin-rubric"
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, None, None, f"cannot read the judge template ({e.__class__.__name__})") from None
    missing = [f for f in TEMPLATE_FIELDS if f not in {m.group(1) for m in _FIELD.finditer(text)}]
    if missing:
        raise InputError(path, None, None, "the judge template lacks " + ", ".join("{%s}" % f for f in missing))
    return text, "cmb-clin-judge" if is_official_template(text) else "cmb-clin-judge-custom"


def fill_template(template: str, fields: Mapping[str, str]) -> str:
    """The five fields put in place; every other brace (the JSON example) is left as written."""
    return _FIELD.sub(lambda m: fields[m.group(1)], template)


def cmb_clin_judge_fields(item: Mapping, turn: int, answer: str) -> dict[str, str]:
    """The judge's inputs for the model's `answer` to question `turn` (0-based) of a CMB-Clin case.
    The README does not say how the conversation is written out; ours: `问：...\\n答：...` per
    earlier turn, with the reference solutions (the answers the model saw)."""
    turns = item["turns"]
    history = "\n".join(f"问：{t['question']}\n答：{t['answer']}" for t in turns[:turn])
    return {"description": item["description"], "history": history, "question": turns[turn]["question"],
            "solution": turns[turn]["answer"], "answer": answer}


def judge_cmb_clin(url: str, model: str, fields: list[Mapping[str, str]], template: str = QILIN_RUBRIC_TEMPLATE,
                   timeout: float = 60.0) -> list[dict]:
    """Ratings {criterion: 1-5 or None, "overall": mean or None, "raw": reply} for each answer."""
    endpoint = _endpoint(url)
    return [parse_ratings(_post(endpoint, model, fill_template(template, f), timeout)) for f in fields]


# A criterion's rating inside the reply's JSON-like object: the README's example writes the keys in
# typographic quotes with spaces (‘ fluency ’: 3), so any quote style is accepted, integers 1-5 only.
_QUOTES = "\"'‘’“”"


def parse_ratings(reply: str, criteria: tuple[str, ...] = CMB_CLIN_CRITERIA) -> dict:
    """The first {...} in `reply` rating every criterion with an integer 1-5, else Nones."""
    for block in re.findall(r"\{[^{}]*\}", reply):
        scores = {}
        for c in criteria:
            m = re.search(rf"[{_QUOTES}]\s*{c}\s*[{_QUOTES}]\s*[:：]\s*(\d+)(?![\d.])", block)
            if m and 1 <= int(m.group(1)) <= 5:
                scores[c] = int(m.group(1))
        if len(scores) == len(criteria):
            return {**scores, "overall": sum(scores.values()) / len(scores), "raw": reply}
    return {**{c: None for c in criteria}, "overall": None, "raw": reply}


def _endpoint(url: str) -> str:
    endpoint = url.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def _post(endpoint: str, model: str, prompt: str, timeout: float) -> str:
    body = json.dumps({"model": model, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt}]}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
        return data["choices"][0]["message"]["content"] or ""
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise QilinError(f"judge endpoint {endpoint}: {getattr(e, 'reason', e)}") from None
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise QilinError(f"judge endpoint {endpoint}: the reply is not an OpenAI chat completion") from None
