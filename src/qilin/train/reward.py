"""The `reward` stage: a scalar-head reward model initialised from the policy (ChiMed-GPT, METHODS.md 2).

The policy's causal-LM checkpoint is loaded as `AutoModelForSequenceClassification` with one label:
the transformer body is the policy's, the scalar head (`score`) is new. The reward of an answer is the
head's output at the last token of `prompt + answer` rendered with the chat template, and TRL's
RewardTrainer minimises the pairwise loss `-log sigmoid(r(x, y_chosen) - r(x, y_rejected))`.

Training files hold pairs `{"prompt", "chosen", "rejected"}` or ranked lists
`{"prompt", "responses": [best, ..., worst]}`; a list of k answers gives every ordered pair, k(k-1)/2.

The stage evaluates itself (the benchmark suite is for policies): pairwise accuracy on held-out
pairs, beside a length-only baseline that prefers the longer answer, so that the report shows what
the model learned beyond length. Both go to `held_out/metrics.json` (not `eval/`, which holds the
benchmark evaluations of policies; the stage record says the runner evaluates nothing here). `qilin reward-score --model DIR FILE` scores any file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from qilin import dist
from qilin.config import doc
from qilin.errors import InputError, QilinError
from qilin.model.load import check_model_dir, lora_config
from qilin.runs import RunFolder, atomic_write_json, atomic_write_jsonl, atomic_write_text, iter_jsonl
from qilin.train.common import TrainSettings, save_trained, train, trl_args

# Prompt fields of other formats (Alpaca, ShareGPT exports, our own eval files): a record naming its
# prompt this way is a file from somewhere else, so the error says which name to use.
OTHER_PROMPT_NAMES = ("question", "instruction", "query", "input", "conversations", "messages")
HELD_OUT = "held_out"  # folder of the held-out pairwise accuracy (metrics.json, predictions/reward.jsonl)


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("policy model folder to initialise the reward model from (the SFT model)")
    data: Path = doc('JSONL of pairs {"prompt", "chosen", "rejected"} or ranked lists {"prompt", "responses": '
                     '[best, ..., worst]} (plain strings; prompt = the user turn)')
    held_out: Path | None = doc("held-out pairs (same formats) for pairwise accuracy; default: the data stage's "
                                "eval/preference.jsonl when `data` lies in its train/ folder", None)
    batch_size_eval: int = doc("sequences per forward pass when scoring the held-out pairs", 16)
    train: TrainSettings = doc(
        "training hyper-parameters; max_length is the reward model's context (longer inputs keep their end, "
        "where the reward is read)",
        lambda: TrainSettings(lr=1e-4, epochs=2.0, batch_size=8))


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    train_pairs = read_preferences(cfg.data)  # input errors before any model loads
    held_out = _held_out_path(cfg)
    test_pairs = read_preferences(held_out)
    run.write_config(cfg)
    if not run.model_is_complete():
        model, tokenizer = load_reward_model(cfg.model, seed=cfg.train.seed, new_head=True)
        trainer = _trainer(model, tokenizer, train_pairs, cfg.train, run)
        run.write_metrics(_train(trainer, run))
        tokenizer.model_max_length = cfg.train.max_length  # `reward-score` truncates as training did
        save_trained(trainer, tokenizer, run.model_dir)
        del trainer, model
    if dist.is_main() and not (run.path / HELD_OUT / "metrics.json").is_file():
        evaluate(run.model_dir, test_pairs, held_out, run.path / HELD_OUT, cfg.batch_size_eval)
    dist.barrier()
    return run.finish(inputs={"model": cfg.model, "data": cfg.data, "held_out": held_out}, seed=cfg.train.seed,
                      extra={"model": str(run.model_dir)})


def evaluate(model_dir: Path, pairs: list[dict], source: Path, out: Path, batch_size: int = 16) -> dict:
    """Pairwise accuracy of the reward model and of the length-only baseline on `pairs`; writes
    `out/metrics.json` (the evaluation contract) and `out/predictions/reward.jsonl`."""
    from qilin.eval.metrics import binomial_ci

    model, tokenizer = load_reward_model(model_dir)
    answers = [a for p in pairs for a in (p["chosen"], p["rejected"])]
    rewards = score(model, tokenizer, [p["prompt"] for p in pairs for _ in (0, 1)], answers, batch_size)
    preds = []
    for i, p in enumerate(pairs):
        rc, rr = rewards[2 * i], rewards[2 * i + 1]
        preds.append({"line": p["line"], "prompt": p["prompt"], "reward_chosen": rc, "reward_rejected": rr,
                      "correct": _win(rc, rr), "length_correct": _win(len(p["chosen"]), len(p["rejected"]))})
    n = len(preds)
    acc = sum(p["correct"] for p in preds) / n
    length = sum(p["length_correct"] for p in preds) / n
    result = {
        "metrics": {"reward.accuracy": acc, "reward.length_baseline_accuracy": length,
                    "reward.margin_mean": sum(p["reward_chosen"] - p["reward_rejected"] for p in preds) / n,
                    "reward.mean": sum(rewards) / len(rewards)},
        "protocols": {
            "reward.accuracy": f"held-out pairs from {source.name}: reward(prompt + chosen) > reward(prompt + "
                               "rejected), chat template, reward = scalar head at the last token; ties count 1/2",
            "reward.length_baseline_accuracy": "same pairs: the answer with more characters wins; ties count 1/2"},
        "n": {"reward.accuracy": n, "reward.length_baseline_accuracy": n},
        "ci95": {"reward.accuracy": list(binomial_ci(round(acc * n), n)),
                 "reward.length_baseline_accuracy": list(binomial_ci(round(length * n), n))},
    }
    atomic_write_jsonl(out / "predictions" / "reward.jsonl", preds)
    atomic_write_json(out / "metrics.json", result)
    return result


# ------------------------------------------------------------------------------------ scoring

def load_reward_model(path: str | Path, seed: int = 0, new_head: bool = False):
    """(model, tokenizer): a folder as a one-label sequence classifier, in fp32, eval mode.

    `new_head=True` expects a causal-LM folder and gives it a fresh scalar head (seeded, so the same
    seed gives the same reward model); otherwise the folder must already be a reward model.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qilin.model.chat import ensure_chat_template

    check_model_dir(path)
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if not new_head and not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        raise QilinError(f"{path}: not a reward model (architectures {config.get('architectures')}); "
                         "train one with `qilin reward`")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ensure_chat_template(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    # Last-token pooling finds the last token that is not padding: without a pad id it cannot (STACK.md 5).
    model.config.pad_token_id = tokenizer.pad_token_id
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer


def encode(tokenizer, prompt: str, answer: str, max_length: int | None = None) -> list[int]:
    """Token ids of one (prompt, answer) as the reward model reads it: the chat rendering of the user
    turn and the assistant turn. Past `max_length` the START is cut: the reward is read at the end."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                        tokenize=True, return_dict=True)["input_ids"]
    return ids[-max_length:] if max_length and len(ids) > max_length else ids


def score(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16) -> list[float]:
    """The reward of every (prompt, answer), in input order."""
    import torch

    from qilin.model.runtime import batches, pad

    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    ids = [encode(tokenizer, p, a, limit) for p, a in zip(prompts, answers, strict=True)]
    device = next(model.parameters()).device
    out = [0.0] * len(ids)
    with torch.inference_mode():
        for idx in batches(ids, batch_size, "reward"):
            input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id, left=False, device=device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
            for i, r in zip(idx, logits):
                out[i] = r
    return out


# ------------------------------------------------------------------------------------ records

def read_preferences(path: str | Path) -> list[dict]:
    """Every ordered pair of a file of pairs and ranked lists: [{"prompt", "chosen", "rejected", "line"}].

    Any malformed record is an InputError naming the file, line and field.
    """
    pairs = []
    for n, record in _records(path):
        prompt = _prompt(path, n, record)
        if "responses" in record:
            answers = record["responses"]
            if not isinstance(answers, list):
                raise InputError(path, n, "responses", "expected a ranked list of answers, best first")
            if len(answers) < 2:
                raise InputError(path, n, "responses", f"a ranked list of {len(answers)} answer gives no pair; "
                                 "it needs at least 2")
            for j, a in enumerate(answers):
                _answer(path, n, f"responses[{j}]", a)
            pairs += [{"prompt": prompt, "chosen": answers[i], "rejected": answers[j], "line": n}
                      for i in range(len(answers)) for j in range(i + 1, len(answers))]
        elif "chosen" in record or "rejected" in record:
            pairs.append({"prompt": prompt, "chosen": _answer(path, n, "chosen", record.get("chosen")),
                          "rejected": _answer(path, n, "rejected", record.get("rejected")), "line": n})
        else:
            raise InputError(path, n, None, "expected 'chosen' and 'rejected', or a ranked list 'responses'")
    if not pairs:
        raise QilinError(f"{path}: no records")
    return pairs


def read_scoring(path: str | Path) -> list[dict]:
    """Records to score: {"prompt", "response"}, or pairs / ranked lists (each answer is scored)."""
    records = []
    for n, record in _records(path):
        _prompt(path, n, record)
        fields = [k for k in ("response", "chosen", "rejected") if k in record]
        if "responses" in record:
            if not isinstance(record["responses"], list) or not record["responses"]:
                raise InputError(path, n, "responses", "expected a non-empty list of answers")
            for j, a in enumerate(record["responses"]):
                _answer(path, n, f"responses[{j}]", a)
        elif not fields:
            raise InputError(path, n, "response", "missing: expected 'response' (or 'chosen'/'rejected', or "
                             "'responses')")
        for k in fields:
            _answer(path, n, k, record[k])
        records.append(record)
    if not records:
        raise QilinError(f"{path}: no records")
    return records


def _records(path: str | Path):
    path = Path(path)
    for n, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise InputError(path, n, None, "expected a JSON object")
        yield n, record


def _prompt(path, n: int, record: dict) -> str:
    prompt = record.get("prompt")
    if prompt is None:
        other = [k for k in OTHER_PROMPT_NAMES if k in record]
        hint = f" (this record has {', '.join(repr(k) for k in other)}: rename it to 'prompt')" if other else ""
        raise InputError(path, n, "prompt", "missing" + hint)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(path, n, "prompt", "expected the user turn as a non-empty string")
    return prompt


def _answer(path, n: int, field: str, value) -> str:
    if value is None:
        raise InputError(path, n, field, "missing answer")
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, n, field, "expected a non-empty answer string")
    return value


def _win(a: float, b: float) -> float:
    return 1.0 if a > b else 0.5 if a == b else 0.0


def _held_out_path(cfg: Config) -> Path:
    if cfg.held_out is not None:
        return Path(cfg.held_out)
    guess = Path(cfg.data).parent.parent / "eval" / "preference.jsonl"
    if Path(cfg.data).parent.name != "train" or not guess.is_file():
        raise QilinError(f"reward: no held_out file given and {guess} does not exist; set held_out=FILE")
    return guess


# ------------------------------------------------------------------------------------ training

def _trainer(model, tokenizer, pairs: list[dict], settings: TrainSettings, run: RunFolder):
    """TRL's RewardTrainer on pre-tokenised pairs, so that training and `score` read exactly the
    same tokens (TRL skips its own tokenisation when `chosen_ids`/`rejected_ids` are given)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [{"chosen_ids": encode(tokenizer, p["prompt"], p["chosen"], settings.max_length),
             "rejected_ids": encode(tokenizer, p["prompt"], p["rejected"], settings.max_length)} for p in pairs]
    # max_length=None: TRL would DROP longer pairs; `encode` has already cut them to fit.
    args = trl_args(RewardConfig, settings, run.checkpoints, max_length=None)
    peft = None
    if settings.lora.enabled:  # SEQ_CLS: PEFT also trains (and saves) the new scalar head
        peft = dataclasses.replace(lora_config(settings.lora), task_type="SEQ_CLS")
    return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft)


def _train(trainer, run: RunFolder) -> dict:
    """common.train plus the last logged training accuracy and margin."""
    metrics = train(trainer, run)
    last = next((h for h in reversed(trainer.state.log_history) if "accuracy" in h), {})
    metrics.update({"train.reward_accuracy": last.get("accuracy"), "train.reward_margin": last.get("margin")})
    return metrics


# ------------------------------------------------------------------------------------ command line

def add_parser(sub) -> None:
    """`qilin reward-score --model DIR FILE [--out OUT]`: the reward of every answer in FILE.

    A separate verb, not `qilin reward score`: stage commands take free `key=value` overrides, so a
    sub-command word after `qilin reward` could not be told apart from them.
    """
    s = sub.add_parser("reward-score", help="score the answers of a prompt/response file with a reward model",
                       description="Adds 'reward' (or 'reward_chosen'/'reward_rejected', or 'rewards') to every "
                                   "record of FILE: JSONL with 'prompt' and 'response' (or a pair, or 'responses').")
    s.add_argument("file", help="JSONL file to score")
    s.add_argument("--model", required=True, help="reward model folder (a reward stage's model/)")
    s.add_argument("--out", help="write the scored JSONL here (default: standard output)")
    s.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    s.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    records = read_scoring(args.file)  # input errors before the model loads
    model, tokenizer = load_reward_model(args.model)
    slots = [(i, k) for i, r in enumerate(records) for k in ("response", "chosen", "rejected") if k in r]
    slots += [(i, j) for i, r in enumerate(records) for j in range(len(r.get("responses") or []))]
    answers = [records[i]["responses"][k] if isinstance(k, int) else records[i][k] for i, k in slots]
    rewards = score(model, tokenizer, [records[i]["prompt"] for i, _ in slots], answers, args.batch_size)
    for (i, k), r in zip(slots, rewards):
        if isinstance(k, int):
            records[i].setdefault("rewards", []).append(r)
        else:
            records[i]["reward" if k == "response" else f"reward_{k}"] = r
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
