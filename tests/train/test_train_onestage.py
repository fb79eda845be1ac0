"""The onestage stage on the micro model: priority order, packing with answer-only labels, no shuffling."""

import subprocess
import sys

import pytest

from qilin import config
from qilin.errors import QilinError
from qilin.runs import read_json
from qilin.train import onestage
from micro_data import DISEASES, SYMPTOMS, write_jsonl

MICRO_TRAIN = {"batch_size": 2, "max_length": 64, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0,
               "lr": 1e-3}


@pytest.fixture(scope="module")
def unified(micro_dir):
    records = [{"messages": [{"role": "user", "content": f"{d}的典型症状是什么？"},
                             {"role": "assistant", "content": f"{d}的典型症状有{s}。"}], "source": src}
               for src, diseases in (("books", DISEASES[:6]), ("web", DISEASES[4:])) for d in diseases
               for s in SYMPTOMS[:2]]
    return write_jsonl(micro_dir / "unified.jsonl", records)


def make_cfg(tmp_path, model, sft, unified, **extra):
    return config.build(onestage.Config, {"out": tmp_path / "onestage", "model": model, "data": sft,
                                          "unified": unified, "block_size": 64,
                                          "priorities": {"web": 32, "books": 4, "sft": 1}, "repeats": {"sft": 3},
                                          "train": MICRO_TRAIN, **extra})


def test_packed_blocks_follow_the_order_with_answer_only_labels(tmp_path, micro_model_dir, micro_tokenizer,
                                                                sft_data, unified):
    from qilin.model.chat import ensure_chat_template
    from qilin.data.priority import priority_order

    tokenizer = micro_tokenizer
    ensure_chat_template(tokenizer)
    cfg = make_cfg(tmp_path, micro_model_dir, sft_data, unified)
    items = onestage.read_items(cfg)
    order = priority_order({s: len(v) for s, v in items.items()}, cfg.priorities, cfg.repeats, 0)
    blocks, sources = onestage.pack(tokenizer, items, order, 64, "stream")
    assert all(len(b) == 64 for b in blocks["input_ids"])
    ids = [t for b in blocks["input_ids"] for t in b]
    labels = [t for b in blocks["labels"] for t in b]
    first_ids, first_labels = onestage.labelled(tokenizer, items[order[0][0]][order[0][1]])
    assert ids[:len(first_ids)] == first_ids and labels[:len(first_labels)] == first_labels  # the order's head
    text_of = tokenizer.decode
    trained = text_of([t for t in first_labels if t != -100])
    assert trained.endswith("<|im_end|>") and "典型症状是什么" not in trained  # answer + end of turn only
    assert "典型症状是什么" in text_of(first_ids)
    # SFT (priority 1, 3 repeats) gathers at the end of the blocks
    sft_share = [c["sft"] / sum(c.values()) for c in sources]
    assert sum(sft_share[-3:]) / 3 > sum(sft_share[:3]) / 3


def test_stage_trains_in_order_and_writes_shares(tmp_path, micro_model_dir, sft_data, unified):
    cfg = make_cfg(tmp_path, micro_model_dir, sft_data, unified, train={**MICRO_TRAIN, "max_steps": 3})
    out = onestage.run(cfg)
    assert (out / "model" / ".complete").is_file() and (out / "manifest.json").is_file()
    metrics = read_json(out / "metrics.json")
    assert metrics["onestage.blocks_trained"] == 6 and metrics["train.steps"] == 3
    assert metrics["onestage.packing"] == "isolated" and metrics["train.padding_share"] < 0.5
    shares = read_json(out / "shares.json")
    assert shares["sources"][0] == "web" and shares["blocks"] == 6
    assert sum(sum(b.values()) for b in shares["bins"]) == metrics["train.real_tokens"] <= 6 * 64
    assert read_json(out / "manifest.json")["inputs"]["unified"]["path"] == str(unified)


def test_training_sampler_is_sequential(tmp_path, micro_model_dir, micro_tokenizer):
    from torch.utils.data import SequentialSampler

    from qilin.model.load import load_model
    from qilin.runs import RunFolder

    model, tokenizer = load_model(micro_model_dir)
    blocks = {"input_ids": [[1] * 8] * 4, "labels": [[1] * 8] * 4, "attention_mask": [[1] * 8] * 4}
    trainer = onestage._trainer(model, tokenizer, blocks, config.build(onestage.TrainSettings, MICRO_TRAIN),
                                RunFolder(tmp_path))
    assert isinstance(trainer._get_train_sampler(), SequentialSampler)


def test_a_source_missing_from_the_priority_table_fails_before_loading_a_model(tmp_path, sft_data, unified):
    cfg = make_cfg(tmp_path, tmp_path / "no-model", sft_data, unified, priorities={"web": 32, "sft": 1})
    with pytest.raises(QilinError, match="books.*not in the priority table"):
        onestage.run(cfg)
    proc = subprocess.run([sys.executable, "-m", "qilin.cli", "onestage", f"out={tmp_path / 'o'}",
                           f"model={tmp_path}", f"data={sft_data}", f"unified={unified}",
                           "priorities={web: 32, sft: 1}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "books" in proc.stderr and "Traceback" not in proc.stderr


def _order(cfg, tokenizer):
    from qilin.data.priority import priority_order
    from qilin.model.chat import ensure_chat_template

    ensure_chat_template(tokenizer)
    items = onestage.read_items(cfg)
    return items, priority_order({s: len(v) for s, v in items.items()}, cfg.priorities, cfg.repeats, 0)


def test_official_packing_whole_items_padded_and_cut_every_256_items(tmp_path, micro_model_dir, micro_tokenizer,
                                                                   sft_data, unified):
    """HuatuoGPT-II data_process.py: next item appended while it fits, else the sequence is padded to
    max_seq_len and a new one starts; every loader batch of 256 items starts a new sequence."""
    items, order = _order(make_cfg(tmp_path, micro_model_dir, sft_data, unified), micro_tokenizer)
    pad = micro_tokenizer.pad_token_id
    lengths = [len(onestage.labelled(micro_tokenizer, items[s][i])[0]) for s, i in order]
    for block, batch in ((64, 256), (200, 256), (200, 3)):
        onestage.OFFICIAL_LOADER_BATCH, saved = batch, onestage.OFFICIAL_LOADER_BATCH
        try:
            rows, sources = onestage.pack(micro_tokenizer, items, order, block, "huatuogpt-ii")
        finally:
            onestage.OFFICIAL_LOADER_BATCH = saved
        # expected row contents worked out from the upstream loop, by item lengths only
        expected, cur = [], []
        for start in range(0, len(lengths), batch):
            for n in lengths[start:start + batch]:
                n = min(n, block)
                if sum(cur) + n > block:
                    expected.append(cur)
                    cur = []
                cur.append(n)
            expected.append(cur)
            cur = []
        assert [sum(c.values()) for c in sources] == [sum(e) for e in expected]
        assert set(rows) == {"input_ids", "labels"}  # no attention mask, no position reset, as upstream
        for row, labels, e in zip(rows["input_ids"], rows["labels"], expected):
            assert len(row) == block and row[sum(e):] == [pad] * (block - sum(e))
            assert labels[sum(e):] == [-100] * (block - sum(e))
    # whole items: the first row starts with the first item, unbroken
    ids, labels = onestage.labelled(micro_tokenizer, items[order[0][0]][order[0][1]])
    rows, _ = onestage.pack(micro_tokenizer, items, order, 200, "huatuogpt-ii")
    assert rows["input_ids"][0][:len(ids)] == ids and rows["labels"][0][:len(labels)] == labels


def test_isolated_packing_restarts_positions_per_item(tmp_path, micro_model_dir, micro_tokenizer, sft_data,
                                                      unified):
    from qilin.train.packing import row_batch

    items, order = _order(make_cfg(tmp_path, micro_model_dir, sft_data, unified), micro_tokenizer)
    rows, sources = onestage.pack(micro_tokenizer, items, order, 200, "isolated")
    official, _ = onestage.pack(micro_tokenizer, items, order, 200, "huatuogpt-ii")
    assert len(rows["input_ids"]) == len(official["input_ids"])  # fewer than 256 items: the same rows
    first = rows["seq_lengths"][0]
    assert len(first) > 1 and sum(first) == len(rows["input_ids"][0]) <= 200
    batch = row_batch([{k: rows[k][0] for k in rows}], micro_tokenizer.pad_token_id)
    assert batch["position_ids"][0].tolist() == [p for n in first for p in range(n)]
    assert "attention_mask" not in batch
