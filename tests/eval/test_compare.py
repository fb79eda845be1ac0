"""`qilin eval compare`: a scripted local judge on 127.0.0.1, both orders, win/tie/loss with intervals."""

import json

import pytest
from chat_endpoint import chat_endpoint
from hypothesis import given
from hypothesis import strategies as st
from qilin.cli import main
from qilin.eval.compare import combine, question_text, verdict

PROMPT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def _eval_dir(root, answers):
    (root / "predictions").mkdir(parents=True)
    lines = [{"task": "dialogue", "protocol": "char", "id": f"d{i}", "prompt": PROMPT.format(q=f"问题{i}"),
              "prediction": a, "reference": "参考"} for i, a in enumerate(answers)]
    lines += [{**x, "protocol": "qilin-med"} for x in lines]          # a second protocol: same answers, read once
    (root / "predictions" / "dialogue.jsonl").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return root


def _judge_reply(rule):
    """The endpoint's reply: rule(answer shown as A, answer shown as B)."""
    def reply(body):
        prompt = body["messages"][0]["content"]
        a = prompt.split("[助手A的回答]\n")[1].split("\n\n")[0]
        b = prompt.split("[助手B的回答]\n")[1].split("\n\n")[0]
        return rule(a, b)
    return reply


@pytest.fixture()
def dirs(tmp_path):
    a = _eval_dir(tmp_path / "a", ["好的回答", "好的回答", "一般", "好的回答"])
    b = _eval_dir(tmp_path / "b", ["一般", "一般", "好的回答", "好的回答"])
    return a, b


def _run(dirs, tmp_path, rule, capsys):
    with chat_endpoint(_judge_reply(rule)) as (url, seen):
        assert main(["eval", "compare", "--a", str(dirs[0]), "--b", str(dirs[1]), "--judge", url,
                     "--out", str(tmp_path / "cmp")]) == 0
    prompts = [body["messages"][0]["content"] for _, body in seen]
    return json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8")), prompts, capsys.readouterr().out


def test_fair_judge_gives_win_tie_loss(dirs, tmp_path, capsys):
    rule = lambda a, b: "理由……\n[[A]]" if a.startswith("好") and not b.startswith("好") else (  # noqa: E731
        "[[B]]" if b.startswith("好") and not a.startswith("好") else "格式示例 [[A]] ……\n[[C]]")
    res, seen, printed = _run(dirs, tmp_path, rule, capsys)
    s = res["all"]
    assert len(seen) == 8                                     # 4 pairs x both orders
    assert (s["win"]["count"], s["tie"]["count"], s["loss"]["count"]) == (2, 1, 1) and s["n"] == 4
    assert s["win"]["value"] == 0.5 and s["win"]["ci95"][0] < 0.5 < s["win"]["ci95"][1]
    assert "用户问题]\nuser: 问题0" in seen[0]
    assert "pairwise-both-orders" in printed and "win 0.500" in printed


def test_position_biased_judge_gives_only_ties(dirs, tmp_path, capsys):
    res, _, _ = _run(dirs, tmp_path, lambda a, b: "[[A]]", capsys)
    assert res["all"]["tie"]["count"] == 4 and res["all"]["win"]["count"] == 0


def test_unparsed_replies_are_counted_not_guessed(dirs, tmp_path, capsys):
    res, _, _ = _run(dirs, tmp_path, lambda a, b: "无法判断", capsys)
    assert res["all"]["n"] == 0 and res["all"]["unparsed"] == 4 and res["all"]["win"]["value"] is None


def test_user_mistakes_are_one_line_errors(dirs, tmp_path, capsys):
    assert main(["eval", "compare", "--a", str(dirs[0]), "--b", str(tmp_path), "--judge", "http://x"]) == 2
    assert main(["eval", "compare", "--a", str(dirs[0]), "--b", str(dirs[1])]) == 2
    assert main(["eval", "compare", "--a", str(dirs[0]), "--b", str(dirs[1]), "--judge", "http://x",
                 "--tasks", "cmexam"]) == 2


@given(st.text(max_size=200))
def test_verdict_parser_never_fails(reply):
    v = verdict(reply)
    assert v is None or (v in "ABC" and f"[[{v}]]" in reply)


def test_combine_rules():
    assert combine("A", "B") == "win" and combine("B", "A") == "loss"
    assert combine("A", "A") == "tie" and combine("A", "C") == "win" and combine("C", "C") == "tie"
    assert combine(None, "A") is None
    assert question_text(PROMPT.format(q="头痛怎么办")) == "user: 头痛怎么办"
