"""Knowledge-graph triples rendered as text for continued pre-training.

Qilin-Med's KG-to-text step is unpublished; ours (METHODS.md section 1): group the triples by head
entity, one sentence per relation `{head}的{relation}是{tail}。` with several tails of the same
relation joined by `、`, one paragraph per entity. A causal LM learns facts from running text, and
keeping an entity's facts in one paragraph puts them in one training block.
"""

from __future__ import annotations

from collections.abc import Iterable


def render_triples(triples: Iterable[dict], source: str = "kg") -> list[dict]:
    """`{"head", "relation", "tail"}` records -> `{"id", "text", "source"}` paragraphs, one per head entity.

    Entities and relations keep their first-seen order, so the output is stable for a given file;
    a repeated triple is written once.
    """
    entities: dict[str, dict[str, list[str]]] = {}
    for t in triples:
        tails = entities.setdefault(t["head"], {}).setdefault(t["relation"], [])
        if t["tail"] not in tails:
            tails.append(t["tail"])
    return [{"id": f"{source}-{head}", "text": _paragraph(head, relations), "source": source}
            for head, relations in entities.items()]


def _paragraph(head: str, relations: dict[str, list[str]]) -> str:
    return "".join(f"{head}的{relation}是{'、'.join(tails)}。" for relation, tails in relations.items())
