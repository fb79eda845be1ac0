"""Packed training sequences in which every sample attends only to itself, and the real-token count.

SFT-style stages (sft, rejection rounds, onestage) pack whole conversations into full rows so that
little compute goes to padding. TRL's `packing=True, packing_strategy="bfd"` does the packing
(best-fit decreasing: conversations sorted by length, each put in the fullest row it fits, none
cut) and records each conversation's length (`seq_lengths`). What keeps the samples apart is
`position_ids` restarting at 0 for every sample with NO attention_mask: transformers then builds
a block-diagonal causal mask (masking_utils.find_packed_sequence_indices) for the sdpa and eager
attention, so a sample's loss is what it would be alone (tests/train/test_train_packing.py).

TRL flattens a whole batch into one row ("padding-free"), which suits FlashAttention's varlen
kernels. With sdpa or eager attention (every CPU run) one flat row of batch x max_length tokens
makes attention cost grow with the square of the whole batch; `RowCollator` keeps the packed rows
as rows instead (same mask per row, batch x max_length^2 attention). `isolate_rows` puts it in
place of TRL's collator unless the model runs FlashAttention.
"""

from __future__ import annotations

from dataclasses import dataclass


def row_batch(rows: list[dict], pad_id: int) -> dict:
    """Rows {"input_ids", "labels", "seq_lengths"} -> a padded batch with per-sample position_ids.

    The first token of every sample gets label -100: it would otherwise be predicted from the end of
    the previous sample in the row. Padding gets position 0 (a sample of its own) and label -100.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        labels[i, :n] = torch.as_tensor(r.get("labels", r["input_ids"]))
        lengths = r.get("seq_lengths") or [n]
        positions[i, :n] = torch.cat([torch.arange(k) for k in lengths])
    labels[positions == 0] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@dataclass
class RowCollator:
    """Packed rows kept as rows (module docstring); a torch DataLoader collate_fn."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict:
        return row_batch(rows, self.pad_token_id)


def isolate_rows(trainer) -> None:
    """Replace the collator of a packed (bfd) SFTTrainer by RowCollator unless FlashAttention runs.

    TRL refuses a custom collator together with bfd packing (it needs position_ids, which its own
    padding-free collator writes); RowCollator writes them too, so it is swapped in after
    construction, before any batch is built.
    """
    implementation = str(getattr(trainer.model.config, "_attn_implementation", "") or "")
    if not implementation.startswith("flash"):
        trainer.data_collator = RowCollator(trainer.processing_class.pad_token_id)

