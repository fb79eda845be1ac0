"""The data stage on the bundled data: contract shapes, determinism, no leaks, card = files, resume."""

import json
from pathlib import Path

import pytest

from qilin.config import load
from qilin.data import overlap, prepare
from qilin.runs import read_json

FILES = [f"train/{n}.jsonl" for n in prepare.TRAIN_FILES] + [f"eval/{n}.jsonl" for n in prepare.EVAL_FILES]
SHAPES = {
    "train/pretrain_general.jsonl": {"text", "source"}, "train/cpt.jsonl": {"text", "source"},
    "train/sft.jsonl": {"messages", "source"}, "train/dpo.jsonl": {"prompt", "chosen", "rejected", "source"},
    "eval/cmexam.jsonl": {"id", "question", "options", "answer", "explanation", "source"},
    "eval/dialogue.jsonl": {"id", "question", "answer", "source"},
    "eval/medical.jsonl": {"id", "text", "source"}, "eval/general.jsonl": {"id", "text", "source"},
    "eval/preference.jsonl": {"id", "prompt", "chosen", "rejected", "source"},
}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "00-data"
    return prepare.run(load(prepare.Config, base={"out": out}))


def test_outputs_follow_the_contract(built):
    assert (built / "manifest.json").is_file() and (built / "config.yaml").is_file()
    for name, keys in SHAPES.items():
        recs = lines(built / name)
        assert recs and all(set(r) == keys for r in recs), name
    sft = lines(built / "train/sft.jsonl")
    assert all(m["role"] in ("user", "assistant", "system") and m["content"] for r in sft for m in r["messages"])
    assert len(lines(built / "eval/cmexam.jsonl")) == 200 and len(lines(built / "eval/dialogue.jsonl")) == 100
    assert {r["source"] for r in lines(built / "eval/preference.jsonl")} == {"medical_pref", "general_pref"}


def test_card_counts_match_files(built):
    card = read_json(built / "card.json")
    assert set(card["files"]) == set(FILES)
    for name in FILES:
        recs = lines(built / name)
        entry = card["files"][name]
        assert entry["count"] == len(recs) == sum(entry["sources"].values()), name
        assert entry["characters"] == sum(len(s) for r in recs for s in prepare.contents(r))
        assert entry["tokens"] is None
    # the one CMExam row without an answer is skipped and named, not fatal
    assert any(":4729: field 'Answer'" in m for m in card["skipped_invalid"]["cmexam"])
    assert "Contamination" in (built / "card.md").read_text(encoding="utf-8")


def test_no_evaluation_item_survives_in_training(built):
    cfg = load(prepare.Config, base={"out": built})
    evals = {n: lines(built / f"eval/{n}.jsonl") for n in prepare.EVAL_FILES}
    index = overlap.build_index(prepare.eval_index_items(evals))
    train = ["\n".join(prepare.contents(r)) for n in prepare.TRAIN_FILES for r in lines(built / f"train/{n}.jsonl")]
    hits = overlap.check(train, index, cfg.min_shared, cfg.min_coverage, cfg.max_train_docs)
    assert not any(hits)
    # and, plainly: no evaluation question or text appears verbatim in any training text
    corpus = "\x00".join(overlap.normalize(t) for t in train)
    keys = [overlap.normalize(text) for _, _, text in prepare.eval_index_items(evals)]
    assert not [k for k in keys if len(k) >= 8 and k in corpus]
    removed = read_json(built / "card.json")["contamination"]["removed"]
    assert removed and all(x["matches"] for x in removed)


def test_deterministic_and_seed_dependent(built, tmp_path):
    again = prepare.run(load(prepare.Config, base={"out": tmp_path / "same"}))
    for name in FILES + ["card.md"]:
        assert (again / name).read_bytes() == (built / name).read_bytes(), name
    other = prepare.run(load(prepare.Config, base={"out": tmp_path / "other", "seed": 1}))
    ids = lambda p: {r["id"] for r in lines(p / "eval/cmexam.jsonl")}  # noqa: E731
    assert ids(other) != ids(built)


def test_rerun_on_complete_folder_returns_at_once(built):
    before = {n: (built / n).stat().st_mtime_ns for n in FILES}
    assert prepare.run(load(prepare.Config, base={"out": built})) == built  # nothing rewritten (below)
    assert before == {n: (built / n).stat().st_mtime_ns for n in FILES}


def test_add_token_counts_fills_and_rewrites_card(built, tmp_path):
    import shutil

    copy = Path(shutil.copytree(built, tmp_path / "copy"))

    class CharTokenizer:  # one token per character: token counts must equal character counts
        name_or_path = "chars"

        def __call__(self, texts):
            return {"input_ids": [list(t) for t in texts]}

    card = prepare.add_token_counts(copy, CharTokenizer())
    assert card["tokenizer"] == "chars"
    assert all(f["tokens"] == f["characters"] for f in read_json(copy / "card.json")["files"].values())
    assert "Tokens: chars" in (copy / "card.md").read_text(encoding="utf-8")


def test_too_many_held_out_is_a_clear_error(tmp_path):
    from qilin.errors import QilinError

    with pytest.raises(QilinError, match="cmexam: 99999 items asked"):
        prepare.run(load(prepare.Config, base={"out": tmp_path / "x", "eval_cmexam": 99999}))


def test_knowledge_probes_without_the_fictional_facts(built):
    """By default the FICTIONAL facts stay out of training, and the probes ask the real KG facts that
    made it into the CPT file (no control set: there is none for them)."""
    assert not any(r["source"].startswith("fictional") for r in lines(built / "train/cpt.jsonl"))
    probes = lines(built / "eval/probe.jsonl")
    assert probes and {r["kind"] for r in probes} == {"kg"} and {r["set"] for r in probes} == {"seen", "paraphrase"}
    cpt = " ".join(r["text"] for r in lines(built / "train/cpt.jsonl") if r["source"] == "kg")
    assert all(r["head"] in cpt for r in probes)
