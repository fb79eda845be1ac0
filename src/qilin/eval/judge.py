"""An LLM judge for CMB-Clin answers through any OpenAI-compatible endpoint (`--judge URL`).

CMB-Clin's original judge is GPT-4 rating fluency, relevance, completeness and medical proficiency
1-5 (METHODS.md 4). Plain `urllib` (no client library): one POST to `<URL>/chat/completions` per
answer, temperature 0. The reply must contain a JSON object with the four integer ratings; a reply
without one is kept as unparsed (None ratings, counted in `judge.unparsed`), not guessed.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from qilin.errors import QilinError

PROMPT = """你是一名资深临床医学专家，请评价AI医生对病例问题的回答。
对话（病例与此前的问答）：
{context}

参考答案：
{reference}

AI医生的回答：
{answer}

请从以下四个方面各给出1到5的整数评分（5最好）：流畅性(fluency)、相关性(relevance)、完整性(completeness)、医学专业性(proficiency)。
只输出一个JSON对象，例如：{{"fluency": 4, "relevance": 5, "completeness": 3, "proficiency": 4}}"""


def judge_answers(url: str, model: str, conversations: list[list[dict]], lines: list[dict],
                  criteria: tuple[str, ...], timeout: float = 60.0) -> list[dict]:
    """Ratings {criterion: 1-5 or None, "overall": mean or None, "raw": reply} for each answer."""
    endpoint = chat_endpoint(url)
    out = []
    for conv, line in zip(conversations, lines, strict=True):
        context = "\n".join(f"{m['role']}: {m['content']}" for m in conv)
        prompt = PROMPT.format(context=context, reference=line["reference"], answer=line["prediction"])
        reply = _post(endpoint, model, prompt, timeout)
        out.append(parse_ratings(reply, criteria))
    return out


def chat_endpoint(url: str) -> str:
    """`<URL>/chat/completions` (URL may already end with it)."""
    endpoint = url.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def parse_ratings(reply: str, criteria: tuple[str, ...]) -> dict:
    """The first JSON object in `reply` holding every criterion as an integer 1-5, else Nones."""
    for m in re.finditer(r"\{[^{}]*\}", reply):
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            continue
        if all(isinstance(obj.get(c), int) and 1 <= obj[c] <= 5 for c in criteria):
            scores = {c: obj[c] for c in criteria}
            return {**scores, "overall": sum(scores.values()) / len(scores), "raw": reply}
    return {**{c: None for c in criteria}, "overall": None, "raw": reply}


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
