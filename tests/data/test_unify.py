"""`unify` offline: segmentation, the two calls' filters and tries, the rule-based stand-in, a local
model as generator, the recipe wiring (`unify` hands its file on, `from: base` starts a second path)."""

import json

import pytest

from qilin import config
from qilin.data import generators, unify
from qilin.errors import QilinError
from qilin.recipe import load_recipe, plan
from qilin.runs import read_json

TEXTBOOK = "隐性感染又称亚临床感染，是指病原体侵入人体后，仅诱导机体产生特异性免疫应答。大多数人获得不同程度的特异性免疫。"
KG = "疟疾的病原体是疟原虫。疟疾的传播媒介是按蚊。"


def write(path, docs):
    path.write_text("".join(json.dumps({"text": t, "source": s}, ensure_ascii=False) + "\n" for s, t in docs),
                    encoding="utf-8")
    return path


def cfg_for(tmp_path, data, **extra):
    return config.build(unify.Config, {"out": tmp_path / "unify", "data": data, **extra})


def test_segments_keep_headings_split_long_paragraphs_and_drop_repeats(tmp_path):
    long = "。".join(f"第{i}句讲述传染病的一个方面" for i in range(60)) + "。"
    data = write(tmp_path / "c.jsonl", [("books", "（二）隐性感染"), ("books", TEXTBOOK), ("books", long),
                                        ("books", TEXTBOOK), ("web", "12"), ("kg", KG), ("kg", KG)])
    segments = unify.make_segments(cfg_for(tmp_path, data, max_segment_chars=200))
    texts = [s["text"] for s in segments]
    assert texts[0] == "（二）隐性感染\n" + TEXTBOOK  # the heading travels with its paragraph
    pieces = [t for t in texts if t.startswith("第")]
    assert len(pieces) > 1 and all(len(p) <= 200 and p.endswith("。") for p in pieces) and "".join(pieces) == long
    assert texts.count(TEXTBOOK) == 1 and texts.count(KG) == 1  # the same text twice is one segment
    assert "12" not in texts  # too short to be a segment
    only_kg = unify.make_segments(cfg_for(tmp_path, data, sources=["kg"]))
    assert [s["source"] for s in only_kg] == ["kg"]


def test_rule_based_questions_and_answers():
    q = generators.rule_question("（二）隐性感染\n" + TEXTBOOK, 0)
    assert q == "什么是隐性感染？" and generators.rule_answer(q, "（二）隐性感染\n" + TEXTBOOK, 0) == TEXTBOOK
    assert generators.rule_question("疟疾的病原体是疟原虫。", 0) == "疟疾的病原体是什么？"
    dialogue = "问：高血压能献血吗？\n答：血压控制平稳时一般可以献血。"
    assert generators.rule_question(dialogue, 0) == "高血压能献血吗？"
    assert generators.rule_answer("高血压能献血吗？", dialogue, 0) == "血压控制平稳时一般可以献血。"
    exam = "发作性吸气性呼吸困难最常见于\nA 气胸\nB 气管内异物\n答案：B\n解析：气道阻塞所致。"
    assert generators.rule_question(exam, 0).endswith("B 气管内异物")
    assert generators.rule_answer("x", exam, 0) == "答案：B\n解析：气道阻塞所致。"


def test_filters_and_second_tries(tmp_path):
    cfg = cfg_for(tmp_path, tmp_path / "unused.jsonl")
    gen = unify.make_generator(cfg)
    long_q = "问：" + "我最近总是头痛，" * 30 + "这是怎么回事？\n答：多休息。"
    record = unify.unify_segment({"id": "a", "source": "web", "text": long_q}, gen, cfg)
    assert record["status"] == "kept" and record["question"] == "这是怎么回事？"  # the second, shorter try
    with_ref = "流感的治疗药物是奥司他韦。剂量请参考说明书。"
    record = unify.unify_segment({"id": "b", "source": "kg", "text": with_ref}, gen, cfg)
    assert record["status"] == "kept" and "参考" not in record["answer"] and record["answer"] == "流感的治疗药物是奥司他韦。"

    calls = []

    def stubborn(*args):
        calls.append(args)
        return "参考资料里说要多休息。"

    gen = unify.Generator("test", lambda excerpt, k: "怎么办？", stubborn)
    record = unify.unify_segment({"id": "c", "source": "web", "text": "多休息。" * 10}, gen, cfg)
    assert record == {"id": "c", "source": "web", "status": "dropped", "question": "怎么办？",
                      "why": "answer: mentions 参考"} and len(calls) == cfg.tries == 2
    assert calls[0][1] == ("多休息。" * 10)[:cfg.reference_chars]


def test_rules_stage_writes_pairs_labels_its_generator_and_resumes(tmp_path):
    data = write(tmp_path / "c.jsonl", [("books", "（一）显性感染\n" + TEXTBOOK.replace("隐性", "显性")),
                                        ("books", TEXTBOOK), ("kg", "疟疾的病原体是疟原虫。疟疾的传播媒介是按蚊。")])
    cfg = cfg_for(tmp_path, data)
    out = unify.run(cfg)
    pairs = [json.loads(line) for line in (out / "unified.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["messages"][0]["content"] for p in pairs] == ["什么是显性感染？", "什么是隐性感染？", "疟疾的病原体是什么？"]
    assert all(p["messages"][1]["role"] == "assistant" for p in pairs)
    metrics = read_json(out / unify.SUMMARY)
    assert not (out / "eval").exists()  # counts are not a benchmark evaluation
    assert metrics["metrics"]["unify.pairs"] == 3 and metrics["protocols"]["unify.generator"].startswith("rules")
    # a kill mid-append leaves a torn line: it is cut off and that segment redone
    results = out / "results.jsonl"
    lines = results.read_text(encoding="utf-8").splitlines(keepends=True)
    results.write_text(lines[0] + lines[1][:10], encoding="utf-8")
    (out / "manifest.json").unlink()
    assert list(unify.read_results(results)) == [json.loads(lines[0])["id"]]
    unify.run(cfg)
    assert (out / "unified.jsonl").read_text(encoding="utf-8").count("\n") == 3


def test_a_local_model_folder_is_a_generator(tmp_path, micro_model_dir):
    data = write(tmp_path / "c.jsonl", [("books", f"第{i}种传染病可经飞沫传播，患者应当及时就医。") for i in range(4)])
    cfg = cfg_for(tmp_path, data, generator={"kind": "local", "model": str(micro_model_dir), "concurrency": 4,
                                             "max_tokens": 6, "backend": "transformers"})
    out = unify.run(cfg)
    results = unify.read_results(out / "results.jsonl")
    assert len(results) == 4  # kept or dropped by the filters: the tiny model writes noise
    assert read_json(out / "manifest.json")["generator"].startswith("local:")
    with pytest.raises(QilinError, match="generator.model"):
        unify.make_generator(cfg_for(tmp_path, data, generator={"kind": "local"}))
    with pytest.raises(QilinError, match="placeholder"):
        unify.make_generator(cfg_for(tmp_path, data, generator={"kind": "local"}, question_prompt="{txt}"))


def test_recipe_hands_the_unified_file_on_and_from_base_restarts_the_chain(tmp_path):
    recipe = load_recipe("recipes/huatuogpt-ii.yaml", [f"out={tmp_path}"])
    steps = {name: cfg for name, _, cfg in plan(recipe)}
    base_model = tmp_path / "01-base" / "model"
    assert steps["unify"].data == tmp_path / "00-data" / "train" / "cpt.jsonl"
    assert steps["onestage"].unified == tmp_path / "02-unify" / "unified.jsonl"
    assert steps["onestage"].model == base_model
    assert steps["twostage-cpt"].model == base_model  # `from: base`, not the one-stage model
    assert steps["twostage-sft"].model == tmp_path / "04-twostage-cpt" / "model"
    recipe.stages = [{"stage": "cpt"}, {"stage": "sft", "from": "nowhere"}]
    with pytest.raises(QilinError, match=r"stages\[1\] \(sft\).from: 'nowhere' is not `base` or an earlier stage"):
        plan(recipe)
