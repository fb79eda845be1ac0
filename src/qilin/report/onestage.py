"""Section `onestage` (declared by the onestage stage): HuatuoGPT-II's one-stage training against the
two-stage path from the same model, with paired tests, and the plot of source shares along training."""

from __future__ import annotations

from qilin.report.folders import COLUMNS, Fragment, RunInfo, Step, fmt, input_model, of_kind, output_model
from qilin.report.paired import NO_TEST, compare_steps
from qilin.report.plots import save
from qilin.runs import read_json


def onestage(info: RunInfo) -> Fragment:
    out, plots = [], {}
    for one in of_kind(info, "onestage"):
        if one.eval:
            out += _comparison(info, one)
        shares = _share_plot(info, one)
        if shares:
            plots["source shares along one-stage training"] = shares
    return Fragment(out, plots)


def path_from(info: RunInfo, one: Step) -> list[Step]:
    """The other stages trained from the model `one` started from, followed model to model: the two-stage
    path of the comparison (read from the manifests, so no naming convention is needed)."""
    chain, current = [], input_model(one)
    while current:
        nxt = next((s for s in info.steps if s is not one and s not in chain and s.eval and s.kind != "rag"
                    and input_model(s) == current and output_model(s)), None)
        if nxt is None:
            break
        chain.append(nxt)
        current = output_model(nxt)
    return chain


def _comparison(info: RunInfo, one: Step) -> list[str]:
    """One-stage vs two-stage on the held-out sets, with the training tokens each path spent."""
    two = path_from(info, one)
    out = ["", "## One-stage vs two-stage (HuatuoGPT-II)", ""]
    if not two:
        return out + ["(no second path from the same model in this recipe: nothing to compare)"]
    keys = [k for k in COLUMNS if k in one.eval["metrics"] and k in two[-1].eval["metrics"]]
    path = " -> ".join(f"`{s.name}`" for s in two)
    out += [f"`{one.name}` (unified pairs + SFT, priority-sampled, one stage) against {path}, both from the "
            "same model on the same data; tokens are the non-padding tokens each path trained on.", "",
            "| path | stages | training tokens | seconds | " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
            "|" + "---|" * (4 + len(keys))]
    for label, stages in (("one-stage", [one]), ("two-stage", two)):
        train = [s.train or {} for s in stages]
        tokens = sum(t.get("train.tokens") or 0 for t in train)
        seconds = sum(t.get("train.seconds") or 0 for t in train)
        m = stages[-1].eval["metrics"]
        out.append(f"| {label} | {' + '.join(s.name for s in stages)} | {tokens} | {seconds:.0f} | "
                   + " | ".join(fmt(k, m.get(k)) for k in keys) + " |")
    out.append("")
    for key in keys:
        a, b = one.eval["metrics"][key], two[-1].eval["metrics"][key]
        test = compare_steps(two[-1], one, key)  # one-stage minus two-stage
        better = 1 if COLUMNS[key][2] == "higher" else -1
        numbers = f"({fmt(key, a)} vs {fmt(key, b)}, {COLUMNS[key][2]} is better; {test.test if test else NO_TEST})"
        if a != b and (test is None or test.sign == 0):
            out.append(f"- one-stage vs two-stage on `{key}`: difference not shown {numbers}")
            continue
        verdict = "ties with" if a == b else ("beats" if test.sign == better else "trails")
        out.append(f"- one-stage {verdict} two-stage on `{key}` {numbers}")
    return out + ["", "A difference is claimed (beats / trails) only where the paired test on the same held-out "
                      "items puts it outside chance at 95%."]


def _share_plot(info: RunInfo, one: Step):
    """HuatuoGPT-II's figure: the share of each source's tokens along one-stage training (shares.json)."""
    import matplotlib.pyplot as plt

    if not (one.path / "shares.json").is_file():
        return None
    shares = read_json(one.path / "shares.json")
    bins = shares["bins"]
    if not bins:
        return None
    totals = [sum(b.values()) or 1 for b in bins]
    x = [(i + 0.5) / len(bins) for i in range(len(bins))]
    ys = [[b[s] / t for b, t in zip(bins, totals)] for s in shares["sources"]]
    labels = [f"{s} (priority {shares['priorities'][s]:g}, x{shares['repeats'][s]})" for s in shares["sources"]]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.stackplot(x, ys, labels=labels)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("fraction of one-stage training (packed blocks, in training order)", fontsize=8)
    ax.set_ylabel("share of tokens", fontsize=8)
    ax.set_title(f"{one.name}: source shares along training (priority sampling)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save(fig, info.plot_dir / "onestage_source_shares.png")
