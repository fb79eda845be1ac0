"""The report's "Knowledge injected" section on small fixture run folders."""

import json

from qilin.report.probes import knowledge, knowledge_section


def _stage(root, folder, seen, unseen, para=None):
    ev = root / folder / "eval"
    ev.mkdir(parents=True)
    m = {"probe.seen": seen[0], "probe.unseen": unseen[0], "probe.paraphrase": (para or unseen)[0],
         "probe.seen_chance": 0.25, "probe.seen_logprob": -20.0, "probe.unseen_logprob": -22.0}
    ci = {"probe.seen": seen[1:], "probe.unseen": unseen[1:], "probe.paraphrase": (para or unseen)[1:]}
    ev.joinpath("metrics.json").write_text(json.dumps({"metrics": m, "ci95": ci, "n": {},
                                                      "protocols": {"probe.seen": "option-logprob: prompt ..."}}))


def _run(tmp_path, stages):
    tmp_path.mkdir(parents=True, exist_ok=True)
    steps = [["data", "00-data", "data"]] + [[n, f"0{i + 1}-{n}", n] for i, (n, *_) in enumerate(stages)]
    tmp_path.joinpath("recipe.json").write_text(json.dumps({"name": "t", "steps": steps}))
    for (name, seen, unseen), (_, folder, _) in zip(stages, steps[1:]):
        _stage(tmp_path, folder, seen, unseen)
    return tmp_path


def test_injection_and_retention(tmp_path):
    run = _run(tmp_path, [("base", (0.25, 0.18, 0.33), (0.26, 0.19, 0.34)),
                          ("cpt", (0.60, 0.51, 0.68), (0.28, 0.21, 0.36)),
                          ("sft", (0.55, 0.46, 0.63), (0.27, 0.20, 0.35)),
                          ("dpo", (0.35, 0.27, 0.44), (0.27, 0.20, 0.35))])
    md, plots = knowledge_section(run)
    assert md.startswith("## Knowledge injected") and "**CPT injected facts**" in md
    assert "| cpt | 0.600 [0.510, 0.680]" in md
    assert "`sft`: probe.seen 0.550" in md and "kept" in md.split("`sft`")[1].split("\n")[0]
    assert "forgotten" in md.split("`dpo`")[1] and "of CPT's gain over the unseen control remains" in md
    assert plots == [run / "plots" / "knowledge_probes.png"] and plots[0].stat().st_size > 1000
    from types import SimpleNamespace

    frag = knowledge(SimpleNamespace(run_dir=run))
    assert "## Knowledge injected" in frag.lines and frag.plots == {"knowledge probes": plots[0]}


def test_no_injection_when_intervals_overlap_or_control_moves_too(tmp_path):
    run = _run(tmp_path / "a", [("base", (0.25, 0.18, 0.33), (0.26, 0.19, 0.34)),
                                ("cpt", (0.32, 0.25, 0.40), (0.26, 0.19, 0.34))])
    assert "No measurable injection" in knowledge_section(run)[0] and "intervals overlap" in knowledge_section(run)[0]
    run = _run(tmp_path / "b", [("base", (0.25, 0.18, 0.33), (0.25, 0.18, 0.33)),
                                ("cpt", (0.60, 0.51, 0.68), (0.62, 0.53, 0.70))])
    assert "unseen control moved as much" in knowledge_section(run)[0]


def test_no_probe_task_no_section(tmp_path):
    tmp_path.joinpath("recipe.json").write_text(json.dumps({"name": "t", "steps": [["base", "01-base", "base"]]}))
    assert knowledge_section(tmp_path) == ("", [])


def test_whole_report_of_a_run_that_evaluates_probes_only(tmp_path):
    """No metric of the stage table's columns (a recipe with `eval: {tasks: [probe]}`): the report has no
    metrics-by-stage plot, and is written, with its knowledge section, instead of failing on an empty grid."""
    from qilin.report import write_report

    run = _run(tmp_path, [("base", (0.25, 0.18, 0.33), (0.26, 0.19, 0.34)),
                          ("cpt", (0.60, 0.51, 0.68), (0.28, 0.21, 0.36))])
    md = (write_report(run) / "report.md").read_text(encoding="utf-8")
    assert "## Knowledge injected" in md and "**CPT injected facts**" in md
    assert not (run / "plots" / "metrics_by_stage.png").exists()
