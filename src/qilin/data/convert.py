"""Conversions: reader records -> training items of each stage, and -> evaluation items.

Training items (TRL column names, DESIGN.md):
  pretrain    {"text"}: QA and dialogues as `问：...\n答：...`, multiple-choice questions as question,
              options, `答案：X` and `解析：...`, preference pairs as prompt + chosen answer, knowledge
              graphs as one paragraph per entity (kg.py)
  sft         {"messages"}: QA and dialogue-CSV pairs as one user and one assistant turn; CMExam-style
              questions as question + options -> `答案：X\n解析：...` (Qilin-Med's SFT uses CMExam
              explanations); CMB-Clin cases as a multi-turn conversation, the case description before the
              first question; preference pairs as prompt -> chosen answer
  preference  {"prompt", "chosen", "rejected"}
Evaluation items keep the contract shapes of ARCHITECTURE.md (e.g. CMExam: id, question, options,
answer, explanation, source).
"""

from __future__ import annotations


def main_text(r: dict) -> str:
    """The text that decides whether an item is long enough to be held out (e.g. for perplexity)."""
    for key in ("text", "question", "prompt", "description"):
        if key in r:
            return r[key]
    return _conversation_text(r["messages"]) if "messages" in r else ""


def dialogue_question(r: dict) -> dict:
    """A few Toyhom rows have 无 ("none") as the patient's text and the question only in the title."""
    if "title" in r and len(r["question"]) < 5 and len(r.get("title", "")) > len(r["question"]):
        return {**r, "question": r["title"]}
    return r


def to_text(r: dict) -> str:
    if "text" in r:
        return r["text"]
    if "options" in r:
        return f"{mc_prompt(r)}\n{mc_answer(r)}"
    if "messages" in r:
        return _conversation_text(r["messages"])
    if "turns" in r:
        return "\n".join([r["description"]] + [f"问：{t['question']}\n答：{t['answer']}" for t in r["turns"]])
    if "chosen" in r:
        return f"{r['prompt']}\n{r['chosen']}"
    return f"问：{r['question']}\n答：{r['answer']}"


def to_messages(r: dict) -> list[dict]:
    if "messages" in r:
        return r["messages"]
    if "options" in r:
        return _turns(mc_prompt(r), mc_answer(r))
    if "turns" in r:
        out = []
        for k, t in enumerate(r["turns"]):
            out += _turns(f"{r['description']}\n{t['question']}" if k == 0 else t["question"], t["answer"])
        return out
    if "chosen" in r:
        return r.get("history", []) + _turns(r["prompt"], r["chosen"])
    return _turns(r["question"], r["answer"])


def to_item(stage: str, r: dict) -> dict:
    """The training item of `stage` for record `r` (with its id and source)."""
    if stage == "pretrain":
        body = {"text": to_text(r)}
    elif stage == "sft":
        body = {"messages": to_messages(r)}
    else:
        body = {k: r[k] for k in ("prompt", "chosen", "rejected")}
    return {"id": r["id"], **body, "source": r["source"]}


def eval_item(r: dict, shape: str) -> dict:
    """An evaluation item in the contract's shape (shape 'text': {id, text, source})."""
    if shape == "text":
        return {"id": r["id"], "text": to_text(r), "source": r["source"]}
    if "options" in r or "turns" in r:
        return {k: v for k, v in r.items()}
    if "chosen" in r:
        return {k: r[k] for k in ("id", "prompt", "chosen", "rejected", "source")}
    if "question" in r:
        return {k: r[k] for k in ("id", "question", "answer", "source")}
    if "messages" in r:
        return {k: r[k] for k in ("id", "messages", "source")}
    return {k: r[k] for k in ("id", "text", "source")}


def eval_texts(set_name: str, r: dict) -> list[tuple[str, str]]:
    """(label, text): the parts of an evaluation item whose presence in training data contaminates it.

    Questions, not answers or options: dialogue answers and option lists reuse stock phrases
    (doctors' sign-offs, "A 肝 B 心 C 脾 D 肺 E 肾") that leak no item and would flag a third of the
    dialogues. A training item with the evaluation question is removed whole, explanation included.
    Multiple-choice explanations are checked too, on their own: sibling questions share explanation
    blocks that state the held-out answer (STACK.md item 8).
    """
    if "options" in r:
        return [(set_name, r["question"])] + ([(f"{set_name} explanation", r["explanation"])]
                                              if r.get("explanation") else [])
    if "turns" in r:
        return [(set_name, "\n".join([r["description"]] + [t["question"] for t in r["turns"]]))]
    if "prompt" in r:
        return [(set_name, r["prompt"])]
    if "question" in r:
        return [(set_name, r["question"])]
    if "messages" in r:
        return [(set_name, "\n".join(m["content"] for m in r["messages"] if m["role"] == "user"))]
    return [(set_name, r["text"])]


def contents(r: dict) -> list[str]:
    """The strings of a record that a model reads: for characters, tokens, dedup and overlap."""
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


def mc_prompt(r: dict) -> str:
    return r["question"] + "\n" + "\n".join(f"{letter} {text}" for letter, text in r["options"].items())


def mc_answer(r: dict) -> str:
    return f"答案：{r['answer']}" + (f"\n解析：{r['explanation']}" if r.get("explanation") else "")


def _turns(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _conversation_text(messages: list[dict]) -> str:
    label = {"user": "问", "assistant": "答"}
    return "\n".join(f"{label[m['role']]}：{m['content']}" for m in messages if m["role"] in label)
