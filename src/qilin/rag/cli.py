"""`qilin rag index | query | quality | augment-sft`. Wired into qilin's CLI by `add_parser(subparsers)`.

    qilin rag index --corpus runs/x/00-data/train/cpt.jsonl [more files] --out runs/x/rag-index
    qilin rag query runs/x/rag-index "霍乱的传播途径是什么？" -k 5
    qilin rag quality qa=data/medicalgpt_samples/rag_medical_qa_87.jsonl dialogue=runs/x/00-data/eval/dialogue.jsonl
    qilin rag augment-sft runs/x/rag-index runs/x/00-data/train/sft.jsonl runs/x/sft_rag.jsonl

User errors (missing or incompatible index, empty corpus, a file that is not UTF-8) are QilinErrors:
one line, exit code 2. `main(argv)` runs these commands on their own (tests, `python -m`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qilin.errors import QilinError


def add_parser(sub) -> argparse.ArgumentParser:
    from qilin.rag import tokenize

    r = sub.add_parser("rag", help="retrieval: build an index over a corpus, query it, measure it",
                       description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = r.add_subparsers(title="rag commands", metavar="COMMAND")

    i = rs.add_parser("index", help="split the corpus into passages and build the BM25 (and dense) index")
    i.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                   help=".jsonl with 'text' (or 问/答, messages) records, or .txt with one paragraph a line")
    i.add_argument("--out", required=True, help="index folder to write (replaced if it is an index)")
    i.add_argument("--size", type=int, default=200, help="passage size in characters, whole sentences (0 = whole documents)")
    i.add_argument("--overlap", type=int, default=50, help="characters of trailing sentences repeated in the next passage")
    i.add_argument("--tokenizer", default=tokenize.DEFAULT, choices=list(tokenize.TOKENIZERS),
                   help=f"Chinese tokenisation (default {tokenize.DEFAULT}: best question-to-answer recall)")
    i.add_argument("--method", default="lucene", choices=["lucene", "okapi"], help="BM25 idf variant")
    i.add_argument("--k1", type=float, default=1.5)
    i.add_argument("--b", type=float, default=0.75)
    i.add_argument("--dense", metavar="MODEL_DIR", help="local sentence-transformers model folder: add a dense index")
    i.set_defaults(func=_index)

    q = rs.add_parser("query", help="print the top passages for a question, with scores and sources")
    q.add_argument("index", help="index folder")
    q.add_argument("question")
    q.add_argument("-k", type=int, default=5, help="passages to show")
    q.add_argument("--mode", default="bm25", choices=["bm25", "dense", "hybrid"])
    q.add_argument("--json", action="store_true", help="one JSON line per passage")
    q.set_defaults(func=_query)

    m = rs.add_parser("quality", help="question-to-answer retrieval quality (recall@1/5/20, MRR) per tokenisation")
    m.add_argument("sets", nargs="+", metavar="NAME=FILE", help="{问, 答} / {question, answer} JSONL or dialogue CSV")
    m.add_argument("--method", default="lucene", choices=["lucene", "okapi"])
    m.set_defaults(func=_quality)

    a = rs.add_parser("augment-sft", help="put retrieved passages into SFT conversations (JSONL in, JSONL out)")
    a.add_argument("index")
    a.add_argument("input", help='JSONL of {"messages": [...]} (the data stage\'s train/sft.jsonl)')
    a.add_argument("output")
    a.add_argument("-k", type=int, default=3)
    a.add_argument("--keep-self", action="store_true",
                   help="keep passages that repeat the conversation itself (dropped by default)")
    a.set_defaults(func=_augment)
    return r


def _index(args) -> int:
    from qilin.rag.index import IndexConfig, build_index
    from qilin.rag.retrieve import read_meta

    cfg = IndexConfig(size=args.size, overlap=args.overlap, tokenizer=args.tokenizer, method=args.method,
                      k1=args.k1, b=args.b, dense_model=Path(args.dense) if args.dense else None)
    out = build_index(args.corpus, args.out, cfg)
    meta = read_meta(out)
    print(f"{out}: {meta['passages']} passages from {sum(c['documents'] for c in meta['corpus'])} documents, "
          f"{meta['bm25']['vocab']} {meta['tokenizer']} tokens, {meta['seconds']} s"
          + (f", dense {meta['dense']['dim']}-d" if meta["dense"] else ""))
    return 0


def _query(args) -> int:
    import json

    from qilin.rag.retrieve import Index

    index = Index(args.index)
    hits = index.search(args.question, args.k, args.mode)
    if not hits:
        print("(no passage shares a word with the question)", file=sys.stderr)
    for h in hits:
        if args.json:
            print(json.dumps(h, ensure_ascii=False))
        else:
            text = " ".join(h["text"].split())
            print(f"{h['rank']}. score {h['score']:.3f}  [{h['source']} {h['doc']} chars {h['start']}-{h['end']}, "
                  f"passage {h['id']}]\n   {text}")
    return 0


def _quality(args) -> int:
    from qilin.rag import quality

    sets = {}
    for item in args.sets:
        if "=" not in item:
            raise QilinError(f"rag quality: {item!r}: expected NAME=FILE")
        name, path = item.split("=", 1)
        sets[name] = quality.read_pairs(path)
    table = quality.compare(sets, method=args.method)
    print(quality.markdown_table(table, quality.best_tokenizer(table)))
    print(f"\nbest by mean MRR: {quality.best_tokenizer(table)}")
    return 0


def _augment(args) -> int:
    import json

    from qilin.rag.augment import augment_sft

    stats = augment_sft(args.index, args.input, args.output, args.k, drop_self=not args.keep_self)
    print(json.dumps(stats, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The rag commands on their own (argv starts with `rag`), with the CLI's error handling."""
    from qilin.entry import run_cli

    parser = argparse.ArgumentParser(prog="qilin")
    add_parser(parser.add_subparsers(title="commands", metavar="COMMAND"))
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
