"""Packed SFT: each conversation in a packed row is trained exactly as if it were alone."""

import random

import pytest
import torch
from datasets import Dataset

from micro_data import ADVICE, DISEASES, SYMPTOMS
from qilin.model.load import load_model
from qilin.runs import RunFolder
from qilin.train.common import TrainSettings
from qilin.train.packing import RowCollator, row_batch
from qilin.train.sft import _trainer, labelled_example


def conversations(n: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d, s = rng.choice(DISEASES), rng.choice(SYMPTOMS)
        turns = [{"role": "user", "content": f"{d}有什么症状？" + "请详细说明。" * (i % 3)},
                 {"role": "assistant", "content": f"{d}常见{s}，应当{rng.choice(ADVICE)}。" * (1 + i % 2)}]
        if i % 4 == 3:
            turns += [{"role": "user", "content": "还有呢？"}, {"role": "assistant", "content": "多休息。"}]
        out.append(turns)
    return out


def packed_rows(model, tok, convs, tmp_path, max_length=256):
    settings = TrainSettings(max_length=max_length, batch_size=len(convs))
    trainer = _trainer(model, tok, Dataset.from_list([{"messages": m} for m in convs]), settings,
                       RunFolder(tmp_path / "run"), "bfd")
    assert isinstance(trainer.data_collator, RowCollator)  # sdpa on CPU: rows kept as rows
    return [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))], trainer.data_collator


def token_losses(model, batch) -> torch.Tensor:
    """Cross-entropy of every token given the ones before it (0 where label is -100), shape of labels."""
    with torch.no_grad():
        kwargs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
        logits = model(**kwargs).logits.float()
    labels = batch["labels"]
    losses = torch.zeros(labels.shape)
    losses[:, 1:] = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    return losses


def per_sample(model, batch) -> list[tuple[list[int], list[int], float]]:
    """(input_ids, labels, summed loss) of every sample in a packed batch, split by position_ids."""
    losses = token_losses(model, batch)
    out = []
    for row in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][row] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        for a, b in zip(starts, starts[1:]):
            ids = batch["input_ids"][row, a:b].tolist()
            if b - a > 1:  # a lone padding token is a one-token "sample"
                out.append((ids, batch["labels"][row, a:b].tolist(), float(losses[row, a:b].sum())))
    return out


def alone(model, ids, labels) -> float:
    batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])}
    return float(token_losses(model, batch).sum())


@pytest.fixture(scope="module")
def model_tok(micro_model_dir):
    model, tok = load_model(micro_model_dir)
    model.eval()
    return model, tok


def test_packed_losses_equal_one_by_one(model_tok, tmp_path):
    model, tok = model_tok
    convs = conversations(12, seed=0)
    rows, collator = packed_rows(model, tok, convs, tmp_path)
    assert len(rows) < len(convs)  # several conversations share a row
    batch = collator(rows)
    samples = per_sample(model, batch)
    assert len(samples) == len(convs)
    expected = {tuple(ids): (labels, ids) for ids, labels in (labelled_example(model, tok, m) for m in convs)}
    for ids, labels, loss in samples:
        ref_labels, ref_ids = expected[tuple(ids)]
        # labels: the assistant tokens only, exactly as unpacked SFT trains them
        assert labels == ref_labels and any(x != -100 for x in labels)
        assert loss == pytest.approx(alone(model, ref_ids, ref_labels), abs=1e-4)
    # and the batch mean that training minimises is the mean over the same tokens
    assert (batch["labels"] != -100).sum() == sum(sum(x != -100 for x in lab) for lab, _ in expected.values())


def test_neighbours_do_not_change_a_sample(model_tok, tmp_path):
    model, tok = model_tok
    target = conversations(1, seed=5)[0]
    losses = []
    for seed in (1, 2):  # same target, different neighbours in its row
        rows, collator = packed_rows(model, tok, [target] + conversations(5, seed=seed), tmp_path / str(seed))
        ids, labels = labelled_example(model, tok, target)
        found = [loss for i, lab, loss in per_sample(model, collator(rows)) if i == ids]
        assert len(found) == 1
        losses.append(found[0])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    # without restarting positions (one sequence per row) the neighbours would leak in: the check can fail
    rows, _ = packed_rows(model, tok, [target] + conversations(5, seed=1), tmp_path / "x")
    crossed = {k: v for k, v in row_batch(rows, tok.pad_token_id).items()}
    crossed["position_ids"] = torch.arange(crossed["input_ids"].shape[1]).expand_as(crossed["input_ids"])
    leaky = token_losses(model, crossed).sum()
    assert abs(float(leaky) - float(token_losses(model, row_batch(rows, tok.pad_token_id)).sum())) > 1e-3


def test_row_batch_positions_and_padding():
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, -100, 8, 9], "seq_lengths": [3, 2]},
            {"input_ids": [1, 2], "labels": [1, 2], "seq_lengths": [2]}]
    batch = row_batch(rows, pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 0, 0]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    # first token of every sample and all padding carry no loss
    assert batch["labels"].tolist() == [[-100, 6, -100, -100, 9], [-100, 2, -100, -100, -100]]
    assert "attention_mask" not in batch  # with a mask transformers would ignore the restarting positions
