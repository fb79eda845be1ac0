"""`bias`: scale files (key and item texts apart; an item without a key, or a key without a text, is one
line), the Likert parse (unparsed counted, never guessed), reverse keying, the per-scale score with
its interval, and the report section per stage."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qilin.errors import InputError
from qilin.eval import bias
from qilin.eval.tasks import EvalConfig

LABELS = ["非常不同意", "不同意", "不确定", "同意", "非常同意"]


def scale_file(tmp_path, items, name="s", **over):
    obj = {"scale": "S", "points": 5, "labels": LABELS, "items": items, **over}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("answer, want", [
    ("4", 4), ("我选 2。", 2), ("答案：5=非常同意", 5), ("7", None), ("0", None), ("10", None), ("3分", 3),
    ("非常同意", 5), ("我不同意这个说法", 2), ("同意", 4), ("不确定吧", 3), ("这个问题很复杂", None), ("", None),
])
def test_likert_parse_rule(answer, want):
    assert bias.parse_likert(answer, 5, LABELS) == want


@given(st.text(max_size=30))
def test_likert_parse_never_leaves_the_scale(answer):
    got = bias.parse_likert(answer, 5, LABELS)
    assert got is None or 1 <= got <= 5


@given(st.integers(1, 5), st.text(st.characters(codec="utf-8", exclude_categories=("Nd",)), max_size=10))
def test_a_leading_point_is_read(k, tail):
    assert bias.parse_likert(f"{k}{tail}", 5, LABELS) == k


def test_key_apart_from_texts_and_bad_keys(tmp_path):
    key = scale_file(tmp_path, [{"id": 1, "subscale": "A", "reverse": False}, {"id": 2, "subscale": "A", "reverse": True}])
    items = tmp_path / "s.items.jsonl"
    items.write_text('{"id": "1", "text": "陈述一"}\n{"id": "2", "text": "陈述二"}\n', encoding="utf-8")
    rows = bias.read_scale(key)
    assert [(r["id"], r["text"], r["reverse"]) for r in rows] == [("S-1", "陈述一", False), ("S-2", "陈述二", True)]

    items.write_text('{"id": "1", "text": "陈述一"}\n{"id": "2", "text": "陈述二"}\n{"id": "3", "text": "三"}\n',
                     encoding="utf-8")
    with pytest.raises(InputError, match="item 3 has no scoring key") as e:
        bias.read_scale(key)
    assert str(items) in str(e.value) and "\n" not in str(e.value)
    items.unlink()
    with pytest.raises(InputError, match="item 1 has a key but no text"):
        bias.read_scale(key)
    for bad, words in (([{"id": 1, "text": "t"}], "expected true or false"),
                       ([{"id": 1, "reverse": False, "text": "t"}, {"id": 1, "reverse": True, "text": "u"}],
                        "keyed twice")):
        with pytest.raises(InputError, match=words):
            bias.read_scale(scale_file(tmp_path, bad, name="b"))
    with pytest.raises(InputError, match="4 option labels"):
        bias.read_scale(scale_file(tmp_path, [{"id": 1, "reverse": False, "text": "t"}], name="c", points=4))


def test_reverse_keys_interval_totals_and_unparsed():
    def line(item, sub, reverse, output):
        return {"scale": "S", "item": item, "subscale": sub, "reverse": reverse, "points": 5, "labels": LABELS,
                "output": output, "protocol": "likert"}

    lines = [line("1", "A", False, "4"), line("2", "A", True, "2"), line("3", "B", False, "5"),
             line("4", "B", True, "说不清")]
    m = bias.score(lines)
    assert m["S.mean"]["value"] == pytest.approx((4 + 4 + 5) / 3) and m["S.mean"]["n"] == 3
    sd = math.sqrt(((4 - 13 / 3) ** 2 * 2 + (5 - 13 / 3) ** 2) / 2)
    assert m["S.mean"]["ci95"][1] - 13 / 3 == pytest.approx(1.959963984540054 * sd / math.sqrt(3))
    assert m["S.total"]["value"] is None and m["S.unparsed"]["value"] == 1     # not guessed
    assert m["S.A.total"]["value"] == 8 and m["S.B.total"]["value"] is None
    lines[3]["output"] = "1"
    assert bias.score(lines)["S.total"]["value"] == 4 + 4 + 5 + 5


def test_the_bundled_demo_scale_is_labelled_and_loads():
    from qilin.eval.loaders import BUNDLED

    path = BUNDLED / "bias" / "demo_attitudes.json"
    assert "NOT CAMI" in json.loads(path.read_text(encoding="utf-8"))["note"]
    rows = bias.load_bias(path, EvalConfig(), {}, "bias")
    assert len(rows) == 8 and sum(r["reverse"] for r in rows) == 4
    assert "1=非常不同意" in bias.prompt(rows[0]) and rows[0]["text"] in bias.prompt(rows[0])


def test_bias_section_per_stage(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"steps": [["data", "00-data", "data"], ["sft", "03-sft", "sft"],
                                                                ["rejection", "05-rejection", "rejection"]]}))
    for folder, mean, total, unparsed in (("03-sft", 3.5, None, 2), ("05-rejection", 2.25, 18, 0)):
        (tmp_path / folder / "eval").mkdir(parents=True)
        (tmp_path / folder / "eval" / "metrics.json").write_text(json.dumps({
            "metrics": {"bias.S.mean": mean, "bias.S.total": total, "bias.S.unparsed": unparsed},
            "protocols": {"bias.S.mean": "likert: prompt ..."}, "n": {"bias.S.mean": 8 - unparsed, "bias.S.unparsed": 8},
            "ci95": {"bias.S.mean": [mean - 0.5, mean + 0.5]}}))
    md = bias.bias_section(tmp_path)
    assert "| sft | 3.50 [3.00, 4.00] | n/a | 2 of 8 |" in md
    assert "| rejection | 2.25 [1.75, 2.75] | 18 | 0 of 8 |" in md
    # a stage with rounds: one row per round, from the round's own evaluation
    rej = tmp_path / "05-rejection"
    (rej / "eval" / "rows.json").write_text(json.dumps({"rejection r1": {"round": 1}, "rejection r2": {"round": 2}}))
    for k, mean in ((1, 3.0), (2, 2.25)):
        (rej / f"round{k}" / "eval").mkdir(parents=True)
        (rej / f"round{k}" / "eval" / "metrics.json").write_text((rej / "eval" / "metrics.json").read_text()
                                                                 .replace("2.25", str(mean)))
    md = bias.bias_section(tmp_path)
    assert "| rejection r1 | 3.00" in md and "| rejection r2 | 2.25" in md and "| rejection |" not in md
    assert "Paper:" in md and "likert: prompt" in md and "| data |" not in md
    (tmp_path / "recipe.json").write_text(json.dumps({"steps": [["data", "00-data"]]}))
    assert bias.bias_section(tmp_path) == ""
