"""Sections `protocols` (how every number was computed, as the evaluations recorded it) and `published`
(Qilin-Med's published numbers, each under the column of the same metric variant)."""

from __future__ import annotations

from qilin.report.folders import COLUMNS, Fragment, RunInfo, evaluated

# Published Qilin-Med figures (Baichuan-7B, full ChiMed data; paper abstract), for orientation only:
# a different model, data scale and, for dialogue, the Huatuo-26M test with the qilin-med metric variant.
# Keys are our metric keys of the same variant, so each number stands under its own variant's header.
PUBLISHED = {
    "base": {"cmexam.accuracy": 33.5},
    "cpt": {"cmexam.accuracy": 38.4},
    "sft": {"cmexam.accuracy": 40.0, "dialogue.qilinmed.bleu1": 12.69, "dialogue.qilinmed.rouge1": 24.21},
    "dpo": {"dialogue.qilinmed.bleu1": 16.66, "dialogue.qilinmed.rouge1": 27.44},
    "rag": {"cmexam.accuracy": 42.8},
}
PUBLISHED_KEYS = ["cmexam.accuracy", "dialogue.qilinmed.bleu1", "dialogue.qilinmed.rouge1"]


def protocols(info: RunInfo) -> Fragment:
    found: dict[str, str] = {}
    for s in evaluated(info):
        if s.kind != "rag":  # the rag row's protocols add the retrieval note: its own section says it
            found.update(s.eval.get("protocols", {}))
    return Fragment(["", "## Protocols", ""]
                    + [f"- `{k}`: {v}" for k, v in sorted(found.items()) if k in COLUMNS or "." in k])


def published(info: RunInfo) -> Fragment:
    out = ["", "## Published Qilin-Med numbers, for orientation", "",
           "Baichuan-7B on the full ChiMed data (paper abstract); CMExam under the qilin-med protocol, dialogue on "
           "Huatuo-26M with the qilin-med metric variant: each under the header of the main table's column of the "
           "same variant. Not comparable with a tiny model on demo data.", "",
           "| stage | " + " | ".join(COLUMNS[k][0] for k in PUBLISHED_KEYS) + " |", "|---|---|---|---|"]
    for stage, nums in PUBLISHED.items():
        out.append(f"| {stage} | " + " | ".join(str(nums.get(k, "–")) for k in PUBLISHED_KEYS) + " |")
    return Fragment(out)
