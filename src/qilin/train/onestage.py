"""The `onestage` stage: HuatuoGPT-II's one-stage adaptation (METHODS.md 3.2-3.3).

The unified corpus pairs (the `unify` stage) and the SFT conversations are trained together, in one
stage, as conversations with the loss on the answers only:

1. order: priority sampling (data/priority.py) over the sources, each with a priority and a repeat
   count from the config; the SFT file is one source (`sft_source`, repeated 3 times by default),
   every unified source keeps its corpus source name. A source missing from the table stops the
   stage before any model is loaded;
2. packing (`packing`), the conversations tokenized with THE chat template, labels -100 outside the
   assistant turns (the model learns the answers and their end-of-turn, not the questions):
   - `huatuogpt-ii`, the official code (FreedomIntelligence/HuatuoGPT-II, commit 88ddf9a,
     adaption/one_stage_training/data_process.py `preprocess`): whole items in the sampled order, each
     cut at `block_size`, appended to the current sequence while they fit, else the sequence is
     padded to `block_size` and a new one starts; the items are read in loader batches of 256 and
     the sequence is also closed at the end of every such batch. No attention mask, no position
     reset (train_huatuo.py passes input_ids and labels only): items in a sequence see the ones
     before them;
   - `isolated` (the default): the same whole items in the same order and sequences, but each item
     attends only to itself (position_ids restart per item, train/packing.py) and no 256-item cut;
   - `stream`: the items concatenated and cut every `block_size` tokens (an item may continue into
     the next sequence), attention across items, the last sequence padded;
3. training: the sequences in that order, never shuffled (`train_sampling_strategy="sequential"`):
   the order IS the curriculum, high-priority corpus first and the SFT data at the end. The official
   code trains 2 epochs over the same order (train.sh `--n_epochs 2`, a loader without shuffling).

Writes `shares.json`: the tokens of each source per stretch of the trained sequences, the data of the
report's plot of source shares along training (the paper's figure).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qilin import dist
from qilin.config import doc
from qilin.data.priority import PAPER_PRIORITIES, PAPER_REPEATS, check_table, priority_order
from qilin.errors import QilinError
from qilin.model.load import load_model, lora_config
from qilin.runs import RunFolder, atomic_write_json
from qilin.train.common import TrainSettings, load_jsonl, save_trained, train, trl_args
from qilin.train.sft import _check as check_conversation

SHARE_BINS = 50  # stretches of training in shares.json
OFFICIAL_LOADER_BATCH = 256  # data_process.py: `args.train_bsz_per_gpu = 256`, a sequence closes with each batch
Packing = Literal["isolated", "huatuogpt-ii", "stream"]


@dataclass
class Config:
    out: Path = doc("run folder to write")
    model: Path = doc("input model folder (the previous stage's model/)")
    data: Path = doc('JSONL of SFT conversations {"messages", "source"}: the source `sft_source`')
    unified: Path | None = doc('JSONL of unified pairs {"messages", "source"} (the unify stage\'s unified.jsonl; '
                               "a recipe fills it in); each keeps its corpus source", None)
    priorities: dict[str, float] = doc("priority per source (HuatuoGPT-II: web 32, literature 16, encyclopedia 8, "
                                       "books 4, SFT 1); every source must be listed", dict(PAPER_PRIORITIES))
    repeats: dict[str, int] = doc("times each item of a source is in the pool (HuatuoGPT-II: SFT 3); default 1",
                                  dict(PAPER_REPEATS))
    sft_source: str = doc("the source name of the `data` conversations in the priority table", "sft")
    packing: Packing = doc("isolated: whole items in order, each attending only to itself; huatuogpt-ii: the "
                           "official packing (module docstring); stream: one stream cut into blocks", "isolated")
    block_size: int = doc("tokens per packed training sequence (HuatuoGPT-II train.sh: --max_seq_len 4096)", 4096)
    train: TrainSettings = doc(
        "training hyper-parameters (HuatuoGPT-II train.sh/train_huatuo.py: LR 1e-4, cosine, warmup 1%, weight "
        "decay 0.1, 2 epochs over the same order; with max_steps > 0 only the first sequences are trained, and "
        "the tail is the SFT data)",
        lambda: TrainSettings(lr=1e-4, epochs=2.0, warmup_ratio=0.01, weight_decay=0.1))


def run(cfg: Config) -> Path:
    run = RunFolder(cfg.out)
    if run.is_complete():
        return run.path
    run.write_config(cfg)
    items = read_items(cfg)  # before the model: a bad table or file fails in a second
    counts = {source: len(convs) for source, convs in items.items()}
    order = priority_order(counts, cfg.priorities, cfg.repeats, cfg.train.seed)
    if not run.model_is_complete():
        model, tokenizer = load_model(cfg.model, lora=cfg.train.lora)
        blocks, sources = pack(tokenizer, items, order, cfg.block_size, cfg.packing)
        trainer = _trainer(model, tokenizer, blocks, cfg.train, run, cfg.packing)
        metrics = train(trainer, run)
        per_step = cfg.train.batch_size * cfg.train.grad_accum * dist.world_size()
        trained = min(len(blocks["input_ids"]), trainer.state.global_step * per_step)  # of the first epoch
        metrics |= {"onestage.blocks": len(blocks["input_ids"]), "onestage.blocks_trained": trained,
                    "onestage.items": len(order), "onestage.packing": cfg.packing}
        if dist.is_main():
            atomic_write_json(run.path / "shares.json", shares(sources[:trained], cfg))
        run.write_metrics(metrics)
        save_trained(trainer, tokenizer, run.model_dir, cfg.train.lora)
    inputs = {"model": cfg.model, "data": cfg.data, "unified": cfg.unified}
    return run.finish(inputs=inputs, seed=cfg.train.seed, extra={"model": str(run.model_dir)})


def read_items(cfg: Config) -> dict[str, list[list[dict]]]:
    """Conversations by source: the SFT file as `sft_source`, the unified pairs by their own source."""
    items: dict[str, list[list[dict]]] = {cfg.sft_source: list(load_jsonl(cfg.data, ["messages"],
                                                                          check_conversation)["messages"])}
    if cfg.unified is not None:
        unified = load_jsonl(cfg.unified, ["messages", "source"], check_conversation)
        for messages, source in zip(unified["messages"], unified["source"]):
            items.setdefault(source, []).append(messages)
    counts = {s: len(v) for s, v in items.items()}
    check_table(counts, cfg.priorities, cfg.repeats)
    unused = sorted(set(cfg.repeats) - set(counts))
    if unused:
        raise QilinError(f"onestage: repeats name source(s) {', '.join(unused)} that have no items "
                         f"(sources: {', '.join(sorted(counts))})")
    return items


def pack(tokenizer, items: dict[str, list[list[dict]]], order: list[tuple[str, int]], block_size: int,
         packing: Packing = "isolated"):
    """(training sequences in `order`, the tokens of each source in every sequence) for `packing`.

    Sequences are {"input_ids", "labels"} plus "seq_lengths" (isolated: the item lengths, for
    position_ids) or "attention_mask" (stream). Each conversation is tokenized once; its repeats
    reuse the ids.
    """
    cache: dict[tuple[str, int], tuple[list[int], list[int]]] = {}

    def item(key):
        if key not in cache:
            cache[key] = labelled(tokenizer, items[key[0]][key[1]])
        return cache[key]

    if packing == "stream":
        return _stream(tokenizer, [(k[0], *item(k)) for k in order], block_size)
    return _whole_items(tokenizer, [(k[0], *item(k)) for k in order], block_size, packing)


def _whole_items(tokenizer, labelled_items, block_size: int, packing: Packing):
    """Whole items (cut at block_size) appended while they fit; official: padded rows, a cut every 256 items."""
    official = packing == "huatuogpt-ii"
    rows: list[list[tuple[str, list[int], list[int]]]] = [[]]
    used = 0
    for n, (source, ids, labels) in enumerate(labelled_items):
        ids, labels = ids[:block_size], labels[:block_size]
        if rows[-1] and (used + len(ids) > block_size or (official and n % OFFICIAL_LOADER_BATCH == 0)):
            rows.append([])
            used = 0
        rows[-1].append((source, ids, labels))
        used += len(ids)
    out: dict[str, list] = {"input_ids": [], "labels": [], "seq_lengths": []}
    for row in rows:
        ids = [t for _, i, _ in row for t in i]
        labels = [t for _, _, lab in row for t in lab]
        fill = block_size - len(ids) if official else 0  # isolated rows are padded per batch by RowCollator
        out["input_ids"].append(ids + [tokenizer.pad_token_id] * fill)
        out["labels"].append(labels + [-100] * fill)
        out["seq_lengths"].append([len(i) for _, i, _ in row])
    if official:
        del out["seq_lengths"]
    sources = [Counter() for _ in rows]
    for counter, row in zip(sources, rows):
        for s, i, _ in row:
            counter[s] += len(i)
    return out, sources


def _stream(tokenizer, labelled_items, block_size: int):
    """One stream cut every block_size tokens; the last block padded (attention 0, label -100), not
    dropped: it holds the very end of the curriculum."""
    ids: list[int] = []
    labels: list[int] = []
    owner: list[str] = []
    for source, i, lab in labelled_items:
        ids += i
        labels += lab
        owner += [source] * len(i)
    pad = len(ids) % block_size and block_size - len(ids) % block_size
    mask = [1] * len(ids) + [0] * pad
    ids += [tokenizer.pad_token_id] * pad
    labels += [-100] * pad
    starts = range(0, len(ids), block_size)
    blocks = {name: [seq[s:s + block_size] for s in starts]
              for name, seq in (("input_ids", ids), ("labels", labels), ("attention_mask", mask))}
    sources = [Counter(owner[s:s + block_size]) for s in starts]
    return blocks, sources


def labelled(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation: labels = ids on the assistant turns (the template's
    {% generation %} spans, end-of-turn included), -100 elsewhere."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if not any(mask):
        raise QilinError("onestage: the chat template marks no assistant tokens ({% generation %} missing): "
                         "the answer-only loss would train on nothing")
    return ids, [t if m else -100 for t, m in zip(ids, mask)]


def shares(sources: list[Counter], cfg: Config) -> dict:
    """Tokens per source in SHARE_BINS consecutive stretches of the trained blocks."""
    names = sorted({s for c in sources for s in c}, key=lambda s: -cfg.priorities.get(s, 0))
    n = len(sources)
    bins = []
    for b in range(min(SHARE_BINS, n)):
        total: Counter = Counter()
        for c in sources[b * n // min(SHARE_BINS, n):(b + 1) * n // min(SHARE_BINS, n)]:
            total.update(c)
        bins.append({s: total.get(s, 0) for s in names})
    return {"sources": names, "priorities": {s: cfg.priorities[s] for s in names},
            "repeats": {s: cfg.repeats.get(s, 1) for s in names}, "block_size": cfg.block_size,
            "blocks": n, "bins": bins}


def _trainer(model, tokenizer, blocks: dict, settings: TrainSettings, run: RunFolder, packing: Packing = "stream"):
    from datasets import Dataset
    from transformers import Trainer, default_data_collator
    from trl import SFTConfig

    from qilin.train.packing import RowCollator

    if settings.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(settings.lora))
    # The blocks are ready-made (tokenized, labelled, packed): a plain Trainer takes them as they are.
    # SFTConfig only because trl_args builds every stage's arguments; its SFT-only fields go unused.
    args = trl_args(SFTConfig, settings, run.checkpoints, train_sampling_strategy="sequential",
                    remove_unused_columns=False)
    # isolated: position_ids restart per item and there is no attention_mask (train/packing.py); the
    # official packing passes input_ids and labels only, as train_huatuo.py does.
    collator = RowCollator(tokenizer.pad_token_id) if packing == "isolated" else default_data_collator
    return Trainer(model=model, args=args, train_dataset=Dataset.from_dict(blocks), processing_class=tokenizer,
                   data_collator=collator)
