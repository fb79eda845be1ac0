"""Section `expectations`: does each stage do what it is for? Declared by the stages themselves
(`expects` in qilin.stages), checked against the model the stage started from, with a paired test."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo, Step, evaluated, fmt, input_model, output_model
from qilin.report.paired import NO_TEST, compare_steps


def expectations(info: RunInfo) -> Fragment:
    return Fragment(["", "## What each stage is for", ""] + [f"- {c}" for c in checks(info)])


def checks(info: RunInfo) -> list[str]:
    lines = []
    steps = [s for s in evaluated(info) if s.record is not None]
    for step in steps:
        before = _started_from(step, steps)
        if before is None:
            continue
        for exp in step.record.expects:
            a, b = before.eval["metrics"].get(exp.metric), step.eval["metrics"].get(exp.metric)
            if a is None or b is None:
                continue
            lines.append(claim(before, step, exp.metric, exp.direction, a, b))
    return lines


def claim(before: Step, step: Step, key: str, direction: str, a: float, b: float) -> str:
    """holds (the paired test puts the move in the expected direction outside chance), DOES NOT HOLD (it
    puts it the other way), not shown (anything else), with the test's p-value or interval."""
    test = compare_steps(before, step, key)
    want = -1 if direction == "lower" else 1
    verdict = "not shown" if test is None or test.sign == 0 else ("holds" if test.sign == want else "DOES NOT HOLD")
    detail = test.test if test else NO_TEST
    return (f"{verdict}: {key} {direction} after `{step.name}` than after `{before.name}` "
            f"({fmt(key, a)} -> {fmt(key, b)}; {detail})")


def _started_from(step: Step, steps: list[Step]) -> Step | None:
    """The evaluated step whose output model this step trained from (from the manifests)."""
    start = input_model(step)
    return next((s for s in steps if s is not step and start and output_model(s) == start), None)
