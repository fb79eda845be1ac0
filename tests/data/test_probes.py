"""Knowledge probes (qilin.data.probes): seen / paraphrase / unseen sets from triples, cloze probes from
documents, the data stage's probe file, optional source groups, and `qilin probe build`."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qilin.cli import main
from qilin.data import probes
from qilin.data.sources import load_spec
from qilin.errors import QilinError

SEEN = [{"head": "甲热", "relation": "病原体", "tail": "乙杆菌"},
        {"head": "甲热", "relation": "传播途径", "tail": "饮用生水"},
        {"head": "甲热", "relation": "传播途径", "tail": "蚊虫叮咬"},      # second tail of the same fact
        {"head": "丙病", "relation": "病原体", "tail": "丁病毒"},
        {"head": "丙病", "relation": "传播途径", "tail": "输血"}]
CONTROL = [{"head": "戊热", "relation": "病原体", "tail": "丁病毒"},
           {"head": "戊热", "relation": "传播途径", "tail": "输血"},
           {"head": "庚病", "relation": "病原体", "tail": "己球菌"}]   # an object never trained on: left out
TEMPLATES = {"病原体": "{head}的病原体是{tail}。", "传播途径": "{tail}是{head}的传播途径。"}
PARAPHRASE = {"病原体": "导致{head}的微生物是{tail}", "传播途径": "{head}的传染方式是{tail}"}


def test_sets_wording_and_distractors():
    items, note = probes.from_triples(SEEN, CONTROL, TEMPLATES, PARAPHRASE, n_wrong=3, seed=1)
    by = {(x["set"], x["head"], x["relation"]): x for x in items}
    # the trained wording; a wording whose object comes first cannot be a cloze: that fact is left out
    assert by["seen", "甲热", "病原体"]["prompt"] == "甲热的病原体是"
    assert ("seen", "甲热", "传播途径") not in by and note["seen"] == {"items": 2, "left_out": 2}
    assert by["paraphrase", "甲热", "传播途径"]["prompt"] == "甲热的传染方式是"
    assert by["paraphrase", "甲热", "传播途径"]["target"] == "饮用生水"             # the first tail
    assert by["unseen", "戊热", "病原体"]["prompt"] == "戊热的病原体是"
    assert not any(x["head"] == "庚病" for x in items) and note["unseen"]["left_out"] == 2  # + 戊热's tail-first wording
    for x in items:
        assert x["options"][x["answer"]] == x["target"]
        pool = {t["tail"] for t in SEEN if t["relation"] == x["relation"]}
        assert set(x["options"].values()) <= pool                # same relation, objects that were trained on
        own = {t["tail"] for t in SEEN + CONTROL if t["head"] == x["head"] and t["relation"] == x["relation"]}
        assert set(x["options"].values()) & own == {x["target"]}                # never another true tail
    # seeded: the same probes again
    assert probes.from_triples(SEEN, CONTROL, TEMPLATES, PARAPHRASE, n_wrong=3, seed=1)[0] == items


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="甲乙丙丁戊己庚辛，。！abc ", min_size=0, max_size=60), min_size=0, max_size=8))
def test_document_probes_are_cut_from_the_documents(texts):
    for x in probes.from_documents(texts, span=3, seed=0):
        doc = texts[int(x["head"].split()[1])]
        assert doc.startswith(x["prompt"] + x["target"]) and len(x["target"]) == 3
        assert x["options"][x["answer"]] == x["target"] and len(set(x["options"].values())) == len(x["options"])


def _write(path: Path, rows):
    path.write_text("head\trelation\ttail\n" + "".join(f"{r['head']}\t{r['relation']}\t{r['tail']}\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture()
def layout(tmp_path):
    _write(tmp_path / "seen.tsv", SEEN + [{"head": "壬热", "relation": "病原体", "tail": "癸菌"}])
    _write(tmp_path / "unseen.tsv", CONTROL)
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  - {name: fict, path: seen.tsv, kind: kg, stages: [pretrain], group: fictional,\n"
        "     templates: {病原体: '{head}的病原体是{tail}。', 传播途径: '{head}经{tail}传播。'}}\n", encoding="utf-8")
    (tmp_path / "probes.yaml").write_text(
        "paraphrase: {病原体: '导致{head}的微生物是{tail}'}\n"
        "control:\n  - {path: unseen.tsv, like: fict, group: fictional}\n", encoding="utf-8")
    train = tmp_path / "train"
    train.mkdir()
    # 壬热's paragraph did not make it into the CPT file (as when a cap drops it)
    docs = ["甲热的病原体是乙杆菌。甲热经饮用生水、蚊虫叮咬传播。", "丙病的病原体是丁病毒。丙病经输血传播。"]
    (train / "cpt.jsonl").write_text("".join(json.dumps({"text": d, "source": "fict"}, ensure_ascii=False) + "\n"
                                             for d in docs), encoding="utf-8")
    return tmp_path


def test_data_stage_probes_seen_only_what_was_written(layout):
    spec = load_spec(layout / "sources.yaml", ["include=[fictional]"])
    items, note = probes.for_data_stage(spec, layout / "probes.yaml", layout / "train")
    sets = {(x["set"], x["head"]) for x in items}
    assert {h for s, h in sets if s == "seen"} == {"甲热", "丙病"}
    assert {h for s, h in sets if s == "unseen"} == {"戊热"} and {h for s, h in sets if s == "paraphrase"} == {"甲热", "丙病"}
    assert note["fictional"]["seen"]["items"] == 4 and note["fictional"]["unseen"]["left_out"] == 1   # 庚病: untrained object
    # a control entity found in ANY training file is refused: it would not be unseen
    (layout / "train" / "sft.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "戊热是什么"}]},
                                                           ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(QilinError, match="戊热"):
        probes.for_data_stage(spec, layout / "probes.yaml", layout / "train")


def test_optional_groups_are_left_out_unless_included(layout):
    assert load_spec(layout / "sources.yaml", ["include=[fictional]"]).sources[0].name == "fict"
    (layout / "sources.yaml").write_text((layout / "sources.yaml").read_text(encoding="utf-8")
                                         + "  - {name: kg, path: seen.tsv, kind: kg, stages: [pretrain]}\n",
                                         encoding="utf-8")
    assert [s.name for s in load_spec(layout / "sources.yaml").sources] == ["kg"]
    with pytest.raises(QilinError, match="include nope"):
        load_spec(layout / "sources.yaml", ["include=[nope]"])


def test_bundled_demo_sources_keep_the_fictional_facts_out_by_default():
    root = Path(__file__).resolve().parents[2] / "data"
    assert not any(s.group for s in load_spec(root / "sources.yaml").sources)
    names = [s.name for s in load_spec(root / "sources.yaml", ["include=[fictional]"]).sources]
    assert {"fictional-a", "fictional-b", "fictional-c"} <= set(names)
    for f in ("facts_seen.tsv", "facts_unseen.tsv"):
        assert "FICTIONAL" in (root / "fictional" / f).read_text(encoding="utf-8").splitlines()[0]
    seen = {ln.split("\t")[0] for ln in (root / "fictional" / "facts_seen.tsv").read_text(encoding="utf-8").splitlines()[2:]}
    unseen = {ln.split("\t")[0] for ln in (root / "fictional" / "facts_unseen.tsv").read_text(encoding="utf-8").splitlines()[2:]}
    assert len(seen) == len(unseen) == 12 and not seen & unseen


def test_probe_build_command(layout, tmp_path, capsys):
    (layout / "para.yaml").write_text("病原体: '导致{head}的微生物是{tail}'\n", encoding="utf-8")
    out = tmp_path / "probes.jsonl"
    assert main(["probe", "build", "--triples", str(layout / "seen.tsv"), "--control", str(layout / "unseen.tsv"),
                 "--paraphrase", str(layout / "para.yaml"), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert {r["set"] for r in rows} == {"seen", "paraphrase", "unseen"}
    assert "probes (seen" in capsys.readouterr().out
    (layout / "bad.yaml").write_text("病原体: '{tail}没有主语'\n", encoding="utf-8")
    assert main(["probe", "build", "--triples", str(layout / "seen.tsv"), "--templates", str(layout / "bad.yaml"),
                 "--out", str(out)]) == 2
    assert "must contain {head}" in capsys.readouterr().err
    assert main(["probe", "build", "--out", str(out)]) == 2
