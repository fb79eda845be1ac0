"""The `probe` task: option log-probs -> verdicts -> per-set accuracy with intervals and mean target
log-prob; run through `evaluate` like every task, recomputable from its predictions."""

import json
from types import SimpleNamespace

import pytest
from qilin.errors import InputError
from qilin.eval import probe, results
from qilin.eval.tasks import EvalConfig


def _probe(i, set_name, kind="fictional", answer="A"):
    opts = {"A": f"甲{i}", "B": f"乙{i}", "C": f"丙{i}"}
    return {"id": f"{set_name}-{i}", "set": set_name, "kind": kind, "relation": "病原体", "head": f"病{i}",
            "prompt": f"病{i}的病原体是", "target": opts[answer], "options": opts, "answer": answer}


class KnowsSeen:
    """A fake LM: the target of a `seen` probe gets -1, everything else -5 (a tie among them)."""

    def __init__(self, rows):
        self.known = {(r["prompt"], r["target"]) for r in rows if r["set"] == "seen"}

    def sequence_logprob(self, prompts, conts, batch_size):
        return [(-1.0 if (p, c) in self.known else -5.0, 2) for p, c in zip(prompts, conts)]


def test_verdicts_and_scores():
    rows = [_probe(i, "seen") for i in range(10)] + [_probe(i, "unseen", answer="B") for i in range(10)]
    lines = probe.predict("probe", KnowsSeen(rows), rows, [probe.PROTOCOL], SimpleNamespace(batch_size=4))
    m = probe.score(lines)
    assert m["seen"]["value"] == 1.0 and m["seen"]["n"] == 10 and m["seen"]["ci95"][0] > 0.6
    assert m["unseen"]["value"] == 0.0                                     # a three-way tie is wrong, not lucky
    assert m["seen_logprob"]["value"] == -1.0 and m["unseen_logprob"]["value"] == -5.0
    assert m["seen_chance"]["value"] == pytest.approx(1 / 3)
    line = lines[0]
    assert line["target_logprob"] == -1.0 and line["logprobs"] == {"A": -1.0, "B": -5.0, "C": -5.0}


def test_per_kind_accuracy_and_mean_interval():
    lines = [{"set": "seen", "kind": k, "correct": c, "n_options": 4, "target_logprob": lp}
             for k, c, lp in [("kg", True, -2.0), ("kg", False, -4.0), ("fictional", True, -3.0)]]
    m = probe.score(lines)
    assert m["seen.kg"]["value"] == 0.5 and m["seen.fictional"]["value"] == 1.0
    lo, hi = m["seen_logprob"]["ci95"]
    assert m["seen_logprob"]["value"] == -3.0 and lo < -3.0 < hi and hi - lo == pytest.approx(2 * 1.96 * 1 / 3 ** 0.5)


def test_probe_task_through_evaluate(tiny_model_dir, tmp_path):
    path = tmp_path / "probe.jsonl"
    rows = [_probe(i, s) for s in ("seen", "paraphrase", "unseen") for i in range(3)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = results.evaluate(tiny_model_dir, {"probe": path}, EvalConfig(batch_size=4), tmp_path / "out", ["probe"])
    flat = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    for s in ("seen", "paraphrase", "unseen"):
        assert flat["n"][f"probe.{s}"] == 3 and f"probe.{s}" in flat["ci95"] and f"probe.{s}_logprob" in flat["metrics"]
    assert flat["protocols"]["probe.seen"].startswith("option-logprob: prompt")
    assert results.recompute(tmp_path / "out")["probe"] == {p: x["metrics"] for p, x in
                                                           res["tasks"]["probe"]["protocols"].items()}


def test_bundled_demo_probe_set_loads():
    from qilin.eval.tasks import bundled

    rows = probe.load(bundled("probe"), EvalConfig(), {}, "probe")
    assert {r["set"] for r in rows} == {"seen", "paraphrase", "unseen"}
    assert sum(r["set"] == "unseen" for r in rows) == 48 and {r["kind"] for r in rows} == {"kg", "fictional"}


def test_bad_probe_records_name_the_field(tmp_path):
    path = tmp_path / "probe.jsonl"
    bad = {**_probe(0, "seen"), "answer": "B"}                             # B is not the target
    path.write_text(json.dumps(bad, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="answer"):
        probe.load(path, EvalConfig(), {}, "probe")
    path.write_text(json.dumps({**_probe(0, "seen"), "set": "train"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="set"):
        probe.load(path, EvalConfig(), {}, "probe")
