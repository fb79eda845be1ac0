"""Report section: attitude-scale (bias) scores per stage, from the `bias` task's metrics
(qilin.eval.bias.bias_section); empty when no stage ran the bias task."""

from __future__ import annotations

from qilin.report.folders import Fragment, RunInfo


def bias(info: RunInfo) -> Fragment:
    from qilin.eval.bias import bias_section

    md = bias_section(info.run_dir)
    return Fragment(["", *md.rstrip("\n").split("\n")] if md else [])
