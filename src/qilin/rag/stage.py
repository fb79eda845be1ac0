"""The recipe's `rag` stage (Qilin-Med-RAG): index the CPT corpus, measure retrieval, evaluate with it.

    NN-rag/index/          the BM25 index over the data stage's train/cpt.jsonl (METHODS.md 1: ours =
                           BM25 over the CPT corpus, top-3)
    NN-rag/metrics.json    retrieval quality: recall@1/5/20 and MRR of question-to-answer retrieval on
                           each QA set, for every tokenisation (`retrieval`), the index's own under
                           `metrics`, and the table as markdown for the report (`table_md`)
    NN-rag/eval/           the final model evaluated WITH retrieval (same tasks and protocols as
                           every other stage's eval/, passages before the question): the report's
                           Qilin-Med-RAG row, beside the last stage's row without retrieval
    NN-rag/compare/<name>/ other models evaluated with retrieval in the same way (`compare`): the
                           recipe passes each retrieval-trained SFT stage and its plain twin, so the
                           report can tell whether training with passages helps (RAG issue item 6)
    NN-rag/eval/rows.json  their summary rows, `<name>+rag`
    NN-rag/manifest.json   `model` = the evaluated model (retrieval trains nothing)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from qilin import config as qconfig
from qilin.config import doc
from qilin.errors import QilinError
from qilin.rag import quality, tokenize
from qilin.rag.index import IndexConfig, build_index
from qilin.rag.prompt import MAX_CHARS
from qilin.runs import RunFolder, atomic_write_json, file_hash, read_json


def _bundled_qa() -> list[Path]:
    from qilin.data.prepare import default_data_dir

    return [default_data_dir() / "medicalgpt_samples" / "rag_medical_qa_87.jsonl"]


@dataclass
class Config:
    out: Path = doc("run folder to write, e.g. runs/qilin-med/05-rag")
    corpus: list[Path] = doc("corpus files to index (the recipe passes the data stage's train/cpt.jsonl)")
    data: Path | None = doc("data stage folder: its eval/ sets are evaluated with retrieval, and its "
                            "eval/dialogue.jsonl pairs measure retrieval quality; null = neither", None)
    model: Path | None = doc("model evaluated with retrieval (the recipe passes the last stage's model); "
                             "null = index and retrieval quality only", None)
    qa: list[Path] = doc("question-answer files ({问, 答} JSONL or dialogue CSV) for retrieval quality; "
                         "default: the bundled rag_medical_qa_87.jsonl", _bundled_qa)
    index: IndexConfig = doc("chunking, tokenisation and BM25 parameters of the index", lambda: IndexConfig())
    k: int = doc("passages put before each question (METHODS.md 1: top-3)", 3)
    mode: str = doc("retrieval: bm25, dense (needs index.dense_model) or hybrid", "bm25")
    max_chars: int = doc("characters kept of each passage in the prompt", MAX_CHARS)
    compare_tokenizers: bool = doc("measure retrieval quality for every tokenisation, not only the index's", True)
    eval: dict = doc("qilin.eval.tasks.EvalConfig options for the evaluation with retrieval", {})
    compare: dict[str, Path] = doc("more models to evaluate with retrieval, by name: summary rows `<name>+rag` "
                                   "(needs `data`)", {})


def run(cfg: Config) -> Path:
    folder = RunFolder(cfg.out)
    if folder.is_complete():
        return folder.path
    folder.write_config(cfg)
    ensure_index(cfg)
    folder.write_metrics(retrieval_metrics(cfg))
    if cfg.data is not None:
        if cfg.model is not None:
            _evaluate(cfg, cfg.model, folder.path / "eval")
        rows = {f"{name}+rag": _evaluate(cfg, model, folder.path / "compare" / name)["metrics"]
                for name, model in cfg.compare.items()}
        if rows:
            atomic_write_json(folder.path / "eval" / "rows.json", rows)
    inputs = ({f"corpus{i}": p for i, p in enumerate(cfg.corpus)} | {"model": cfg.model, "data": cfg.data}
              | {f"compare.{name}": model for name, model in cfg.compare.items()})
    return folder.finish(inputs=inputs, seed=None, extra={"model": str(cfg.model) if cfg.model else None})


def ensure_index(cfg: Config) -> Path:
    """The stage's index folder, built unless an index of the same files, built the same way, is there
    (left by an interrupted run, or built early for a retrieval-augmented SFT stage)."""
    if not cfg.corpus:
        raise QilinError("rag stage: corpus is empty; give the files to index (e.g. 00-data/train/cpt.jsonl)")
    index_dir = Path(cfg.out) / "index"
    if not _index_is_current(index_dir, cfg):
        build_index(cfg.corpus, index_dir, cfg.index)
    return index_dir


def _evaluate(cfg: Config, model: Path, out: Path) -> dict:
    """One model evaluated with retrieval into `out` (kept if already complete): the ordinary
    evaluation of the held-out sets with the index's passages before each question."""
    from qilin.eval.results import evaluate_heldout
    from qilin.eval.tasks import EvalConfig

    if (out / "metrics.json").is_file():
        return read_json(out / "metrics.json")
    retrieval = {"rag": str(Path(cfg.out) / "index"), "rag_k": cfg.k, "rag_mode": cfg.mode,
                 "rag_max_chars": cfg.max_chars}
    eval_cfg = qconfig.build(EvalConfig, {**cfg.eval, **retrieval}, "rag.eval")
    return evaluate_heldout(model, cfg.data, eval_cfg, out)


def retrieval_metrics(cfg: Config) -> dict:
    """metrics.json of the stage: retrieval quality on every QA set (module docstring)."""
    sets = {Path(p).stem: quality.read_pairs(p) for p in cfg.qa}
    dialogue = Path(cfg.data) / "eval" / "dialogue.jsonl" if cfg.data else None
    if dialogue is not None and dialogue.is_file():
        sets["dialogue"] = quality.read_pairs(dialogue)
    if not sets:
        return {"metrics": {}}
    tokenizers = list(tokenize.TOKENIZERS) if cfg.compare_tokenizers else [cfg.index.tokenizer]
    if cfg.index.tokenizer not in tokenizers:
        tokenizers.append(cfg.index.tokenizer)
    table = quality.compare(sets, tokenizers, cfg.index.method)
    own = {f"retrieval.{name}.{m}": v for name, q in table[cfg.index.tokenizer].items()
           for m, v in q.items() if m not in ("n", "answers")}
    return {"metrics": own, "n": {f"retrieval.{name}": q["n"] for name, q in table[cfg.index.tokenizer].items()},
            "tokenizer": cfg.index.tokenizer, "best_tokenizer": quality.best_tokenizer(table),
            "retrieval": table, "table_md": quality.markdown_table(table, cfg.index.tokenizer),
            "protocols": {"retrieval": "question-to-answer retrieval: each question's own answer among all "
                                       "distinct answers of its set, BM25 " + cfg.index.method +
                                       "; recall@k = share ranked in the top k, MRR over the full ranking"}}


def _index_is_current(index_dir: Path, cfg: Config) -> bool:
    """An index left by an interrupted stage is reused only if it indexes the same files, same way."""
    meta_file = index_dir / "index.json"
    if not meta_file.is_file():
        return False
    meta = read_json(meta_file)
    same_files = [c["hash"] for c in meta.get("corpus", [])] == [file_hash(p) for p in cfg.corpus]
    params = dataclasses.asdict(cfg.index)
    same_params = (meta.get("tokenizer") == params["tokenizer"] and meta.get("chunk") ==
                   {"size": params["size"], "overlap": params["overlap"]}
                   and (meta.get("bm25") or {}).get("method") == params["method"])
    return same_files and same_params
