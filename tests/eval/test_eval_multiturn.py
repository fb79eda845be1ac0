"""`dialogue-multiturn`: the MedDialog-style formats, the model answering each doctor turn after the
REFERENCE history, and the per-turn scores being the dialogue scores of that turn's lines."""

import json

import pytest

from qilin.errors import InputError
from qilin.eval import multiturn, text
from qilin.eval.tasks import EvalConfig

DIALOGUE = ["病人：医生你好，我咳嗽一周了。", "病人：晚上更厉害。", "医生：有痰吗？", "病人：有白痰。",
            "医生：多喝水，可以吃止咳药。", "病人：谢谢医生。"]


def test_formats_read_the_same_turns(tmp_path):
    meddialog = tmp_path / "m.json"
    meddialog.write_text(json.dumps([["医生：您好。"] + DIALOGUE], ensure_ascii=False), encoding="utf-8")
    lines = tmp_path / "m.jsonl"
    speakers = [{"speaker": "patient" if u.startswith("病人") else "doctor", "text": u[3:]} for u in DIALOGUE]
    lines.write_text(json.dumps({"id": "a", "dialogue": DIALOGUE}, ensure_ascii=False) + "\n"
                     + json.dumps({"id": "b", "utterances": speakers}, ensure_ascii=False) + "\n", encoding="utf-8")
    want = [{"question": "医生你好，我咳嗽一周了。\n晚上更厉害。", "answer": "有痰吗？"},
            {"question": "有白痰。", "answer": "多喝水，可以吃止咳药。"}]   # merged; leading doctor, last patient dropped
    got = list(multiturn.read_dialogues(meddialog)) + list(multiturn.read_dialogues(lines))
    assert [r["turns"] for r in got] == [want] * 3 and [r["id"] for r in got][1:] == ["a", "b"]
    contract = tmp_path / "c.jsonl"
    contract.write_text(json.dumps({"id": "c", "turns": want}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert list(multiturn.read_dialogues(contract))[0]["turns"] == want


@pytest.mark.parametrize("dialogue, words", [
    (["病人：你好"], "no doctor answer"), (["护士：你好", "医生：好"], r"dialogue\[0\]"), ([], "non-empty list"),
])
def test_bad_dialogues_are_one_line(tmp_path, dialogue, words):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"dialogue": ["病人：a", "医生：b"]}\n' + json.dumps({"dialogue": dialogue}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    with pytest.raises(InputError, match=words) as e:
        list(multiturn.read_dialogues(f))
    assert f"{f}:2" in str(e.value)


class _Canned:
    def __init__(self, tokenizer):
        self.tokenizer, self.prompts = tokenizer, []

    def generate(self, prompts, max_new_tokens, batch_size=16):
        self.prompts += prompts
        return ["多喝水。" if k % 2 else "有痰吗" for k in range(len(prompts))]


def test_each_doctor_turn_after_the_reference_history(tiny_lm, tmp_path):
    f = tmp_path / "m.json"
    long = [f"{'病人' if k % 2 == 0 else '医生'}：第{k}句" for k in range(14)]  # 7 doctor turns
    f.write_text(json.dumps([DIALOGUE, long], ensure_ascii=False), encoding="utf-8")
    cfg = EvalConfig(max_new_tokens={"dialogue-multiturn": 8})
    rows = multiturn.load_multiturn(f, cfg, {}, "dialogue-multiturn")
    lm = _Canned(tiny_lm.tokenizer)
    lines = multiturn.predict("dialogue-multiturn", lm, rows, ["char"], cfg)
    assert [x["turn"] for x in lines] == [1, 2, 1, 2, 3, 4, 5, 6, 7]
    assert "有痰吗？" in lm.prompts[1] and "有白痰。" in lm.prompts[1]  # the real doctor's words, not the model's
    assert "以下是一位病人的病例" not in lm.prompts[0]                  # CMB-Clin's opening is CMB-Clin's only
    m = multiturn.score(lines)
    assert m["bleu1"] == text.score(lines)["bleu1"]
    assert m["rougeL_turn2"] == text.score([x for x in lines if x["turn"] == 2])["rougeL"]
    assert m["bleu1_turn5plus"]["n"] == 3 and "bleu1_turn6" not in m and "distinct1_turn1" not in m
