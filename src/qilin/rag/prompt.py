"""THE retrieval-augmented prompt, shared by evaluation, chat, serving and RAG fine-tuning.

Retrieval changes only the *question text*: the passages come first, numbered, then the question.
The result goes wherever the plain question would have gone: into the user turn of the chat
template (dialogue, chat, serving, SFT conversations) or into the raw CMExam prompt
`{question}\\n{options}\\n答案：`. So a model sees one layout whatever the task, and a RAG-trained model
sees at test time exactly what it was trained on.

    以下是参考资料：
    [1] 霍乱是由霍乱弧菌所致的烈性肠道传染病……
    [2] ……

    问题：霍乱的传播途径是什么？

Passages are cut to `max_chars` characters each (120: three passages are ~200 tokens with the tiny
model's tokenizer, 1.8 characters a token): SFT cuts sequences at 384-512 tokens, and the question
and the whole answer must still fit after the passages.
"""

from __future__ import annotations

from collections.abc import Sequence

HEADER = "以下是参考资料：\n"
PASSAGE = "[{n}] {text}\n"
QUESTION = "\n问题：{question}"
MAX_CHARS = 120


def rag_text(question: str, passages: Sequence[str], max_chars: int = MAX_CHARS) -> str:
    """The question with its passages (module docstring); the bare question when there are none."""
    if not passages:
        return question
    body = "".join(PASSAGE.format(n=n, text=" ".join(p.split())[:max_chars]) for n, p in enumerate(passages, 1))
    return HEADER + body + QUESTION.format(question=question)


def rag_prompts(index, questions: Sequence[str], k: int = 3, *, queries: Sequence[str] | None = None,
                mode: str = "bm25", max_chars: int = MAX_CHARS) -> tuple[list[str], list[list[int]]]:
    """(augmented question texts, retrieved passage ids) for each question.

    `index` is a `qilin.rag.retrieve.Index` (or a folder path); `queries` are what is searched for
    when it is not the question itself (CMExam: the question and its options).
    """
    from qilin.rag.retrieve import Index

    if not isinstance(index, Index):
        index = Index(index)
    texts, ids = [], []
    for question, query in zip(questions, queries if queries is not None else questions):
        text, hits = retrieve(index, question, k, query=query, mode=mode, max_chars=max_chars)
        texts.append(text)
        ids.append([h["id"] for h in hits])
    return texts, ids


def retrieve(index, question: str, k: int = 3, *, query: str | None = None, mode: str = "bm25",
             max_chars: int = MAX_CHARS) -> tuple[str, list[dict]]:
    """(the question with its top-k passages, those passages as `Index.search` returns them: id,
    text, source, score, rank); passage n of the list is marker [n] of the text."""
    hits = index.search(question if query is None else query, k, mode)
    return rag_text(question, [h["text"] for h in hits], max_chars), hits
