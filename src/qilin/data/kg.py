"""Knowledge graphs rendered as text for continued pre-training.

Qilin-Med's KG-to-text step is unpublished; ours (METHODS.md section 1): group the facts by head
entity, one sentence per relation from a per-relation template, several tails of the same relation
joined by `、`, one paragraph per entity. A causal LM learns facts from running text, and keeping an
entity's facts in one paragraph puts them in one training block.

The default template is `{head}的{relation}是{tail}。`; a sources file gives templates per relation
where that reads better (data/sources.yaml: `传播途径: "{head}可经{tail}传播。"`).
Both inputs are supported: triples (`{"head", "relation", "tail"}`, any order of rows: they are grouped
in memory, one entry per distinct fact) and per-entity records (`{"entity", "relations": {rel: [tails]}}`).
"""

from __future__ import annotations

from collections.abc import Iterable

from qilin.errors import QilinError

DEFAULT_TEMPLATE = "{head}的{relation}是{tail}。"


def check_templates(templates: dict[str, str], where: str) -> None:
    """A template must name {head} and {tail} (and nothing else but {relation}): a user error otherwise."""
    for rel, t in templates.items():
        try:
            t.format(head="", relation="", tail="")
        except (KeyError, IndexError, ValueError) as e:
            raise QilinError(f"{where}: template for relation {rel!r}: {t!r} is not valid ({e!r}); "
                             "use the fields {head}, {relation}, {tail}") from None
        if "{head}" not in t or "{tail}" not in t:
            raise QilinError(f"{where}: template for relation {rel!r} must contain {{head}} and {{tail}}")


def group_triples(triples: Iterable[dict]) -> tuple[dict[str, dict[str, list[str]]], int]:
    """{head: {relation: [tails]}} in first-seen order, and how many triples repeated a known fact."""
    entities: dict[str, dict[str, list[str]]] = {}
    repeated = 0
    for t in triples:
        tails = entities.setdefault(t["head"], {}).setdefault(t["relation"], [])
        if t["tail"] in tails:
            repeated += 1
        else:
            tails.append(t["tail"])
    return entities, repeated


def render_triples(triples: Iterable[dict], source: str = "kg", templates: dict[str, str] | None = None) -> list[dict]:
    """`{"head", "relation", "tail"}` records -> `{"id", "text", "source"}` paragraphs, one per head entity.

    Entities and relations keep their first-seen order, so the output is stable for a given file;
    a repeated triple is written once.
    """
    entities, _ = group_triples(triples)
    return [render_entity(head, relations, source, templates) for head, relations in entities.items()]


def render_entity(head: str, relations: dict[str, list[str]], source: str = "kg",
                  templates: dict[str, str] | None = None) -> dict:
    """One entity's paragraph as a `{"id", "text", "source"}` record."""
    table = templates or {}
    text = "".join(table.get(rel, DEFAULT_TEMPLATE).format(head=head, relation=rel, tail="、".join(tails))
                   for rel, tails in relations.items())
    return {"id": f"{source}-{head}", "text": text, "source": source}
