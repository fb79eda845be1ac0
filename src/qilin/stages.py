"""The stage records: what each stage is, declared once, read by `qilin <stage>`, the recipe planner,
multi-process launching and the report.

A stage is a module with `Config` (a typed dataclass) and `run(cfg) -> Path` (see docs/ARCHITECTURE.md).
Its record says the rest: what it makes (a policy model, a reward model, a data file, an index), which
earlier outputs it takes and under which Config field, the data stage's file it trains on by default,
whether it trains through the Trainer (and so runs in every process of a multi-process launch), how
it is evaluated, which report sections it contributes and what it is for (the report checks it).

`STAGES` is the one registry (a dict is our registry). Nothing here imports a stage module: `qilin
--help` and the planner's checks stay instant; `record.config()` imports it when needed.

Adding a stage = its module + one record here (+ its test and a line in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Literal

# What a stage's run folder holds for the stages after it, by kind -> the path inside the run folder.
# `policy` is the model the next stage trains from; the others are handed to later stages that need them.
OUTPUTS = {"policy": "model", "reward_model": "model", "unified": "unified.jsonl", "index": "index"}


@dataclass(frozen=True)
class Expectation:
    """What a stage is for, checked on the held-out sets: `metric` moves in `direction` from the model the
    stage started from to the model it made (report section `expectations`)."""

    metric: str
    direction: Literal["higher", "lower"]


@dataclass(frozen=True)
class Stage:
    module: str                              # has Config and run(cfg)
    help: str                                # one line: `qilin --help`, `qilin <stage> --help`
    makes: str = "policy"                    # a key of OUTPUTS: what later stages get from it
    needs: dict[str, str] = field(default_factory=dict)  # Config field -> kind of an earlier output it takes
    data: str | None = None                  # the data stage's file it trains on unless the recipe says otherwise
    seed: str = "train.seed"                 # where the recipe seed goes in its Config ("seed": a plain field)
    every_process: bool = False              # trains through the Trainer: every process of a launch runs it
    evaluation: Literal["after", "own", "none"] = "after"  # after: the runner evaluates its model after it;
    # own: it evaluates models of its own (gets the data stage folder as `eval_data` and the recipe's `eval`);
    # none: no benchmark evaluation (it writes its own numbers to its own files)
    sections: tuple[str, ...] = ()           # report sections it contributes (keys of qilin.report.SECTIONS)
    expects: tuple[Expectation, ...] = ()    # what it is for (the report's `expectations` section)
    retrieval_training: bool = False         # accepts `rag:` in a recipe: trains with the rag stage's passages
    in_recipe: bool = True                   # may be listed under a recipe's `stages:` (data, base, rag are fixed)
    command: str | None = ""                 # `qilin <command>`; "" = its name, None = no top-level command

    def config(self) -> type:
        return importlib.import_module(self.module).Config

    def run(self, cfg) -> object:
        return importlib.import_module(self.module).run(cfg)


_POLICY_IN = {"model": "policy"}

STAGES: dict[str, Stage] = {
    "data": Stage("qilin.data.prepare", "split the bundled data into training sets and held-out evaluation sets, "
                  "with a data card", makes="data", seed="seed", evaluation="none", sections=("data",),
                  in_recipe=False, command=None),  # `qilin data prepare`
    "base": Stage("qilin.train.base", "the base model: a local HF model dir, or the tiny default trained from scratch",
                  every_process=True, in_recipe=False),
    "cpt": Stage("qilin.train.cpt", "domain continued pre-training (documents + EOS, packed blocks)",
                 needs=_POLICY_IN, data="train/cpt.jsonl", every_process=True,
                 expects=(Expectation("ppl.medical", "lower"),)),
    "sft": Stage("qilin.train.sft", "supervised fine-tuning, loss on assistant tokens only",
                 needs=_POLICY_IN, data="train/sft.jsonl", every_process=True, sections=("rag_training",),
                 expects=(Expectation("dialogue.rouge1", "higher"),), retrieval_training=True),
    "dpo": Stage("qilin.train.dpo", "direct preference optimisation (sigmoid loss, reference = input model)",
                 needs=_POLICY_IN, data="train/dpo.jsonl", every_process=True,
                 expects=(Expectation("preference.accuracy", "higher"),)),
    "orpo": Stage("qilin.train.orpo", "odds-ratio preference optimisation (TRL ORPO: SFT loss + odds-ratio term, "
                  "no reference model)", needs=_POLICY_IN, data="train/dpo.jsonl", every_process=True,
                  expects=(Expectation("preference.accuracy", "higher"),)),
    "reward": Stage("qilin.train.reward", "reward model: scalar head on the policy, pairwise loss (scoring: "
                    "reward-score)", makes="reward_model", needs=_POLICY_IN, data="train/dpo.jsonl",
                    every_process=True, evaluation="none", sections=("reward",)),
    "rejection": Stage("qilin.train.rejection", "rejection-sampling RLHF: sample N, keep the top K by reward, SFT, "
                       "T rounds", needs={"model": "policy", "reward_model": "reward_model"},
                       data="train/sft.jsonl",  # the SFT prompts are its prompt pool
                       every_process=True, evaluation="own", sections=("rejection",)),
    "unify": Stage("qilin.data.unify", "HuatuoGPT-II unification: text segments -> (question, answer) pairs by a "
                   "generator", makes="unified", data="train/cpt.jsonl", seed="seed", evaluation="none",
                   sections=("unify",)),
    "onestage": Stage("qilin.train.onestage", "HuatuoGPT-II one-stage training: priority-sampled order, packed, "
                      "answers only", needs={"model": "policy", "unified": "unified"}, data="train/sft.jsonl",
                      every_process=True, sections=("onestage",), expects=(Expectation("ppl.medical", "lower"),)),
    "rag": Stage("qilin.rag.stage", "index the CPT corpus, measure retrieval, evaluate models with it "
                 "(Qilin-Med-RAG)", makes="index", seed="", evaluation="none", sections=("retrieval",),
                 in_recipe=False, command=None),  # the recipe's `rag:` section; `qilin rag ...` by hand
}


def recipe_stages() -> list[str]:
    """The stage names a recipe may list under `stages:`."""
    return [name for name, s in STAGES.items() if s.in_recipe]


def commands() -> dict[str, Stage]:
    """`qilin <command>` -> its stage record."""
    return {s.command or name: s for name, s in STAGES.items() if s.command is not None}


def of_module(module: str) -> Stage | None:
    """The record of the stage whose module is `module` (a config's type lives in its stage module)."""
    return next((s for s in STAGES.values() if s.module == module), None)
