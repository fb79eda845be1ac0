"""THE model runtime: a loaded causal LM exposing batched generation (greedy or sampled) and scoring
(next-token log-probabilities, continuation log-likelihoods, perplexity), lm-evaluation-harness style.
Evaluation, unification's local generator, rejection sampling (model/generate.py) and reward scoring
all batch through here, so padding, stop tokens and decoding settings are decided in one place.

Batching rules, and why:
- generation pads on the LEFT so every row's next token sits in the last column; `generate`
  derives position ids from the attention mask, so a padded row decodes exactly like an unpadded one;
- scoring passes pad on the RIGHT: a plain forward call numbers positions 0..T-1 regardless of the
  mask, so left padding would shift the real tokens' positions; with right padding real tokens come
  first and are untouched by the pads behind them (next-token scoring is the exception: it passes
  position ids itself, see `next_token_logprobs`);
- batches are sorted by length (less padding, so less wasted compute on CPU); results come back in
  input order;
- prompts that share a long prefix (CMMLU's instruction + few-shot examples) compute it once and
  continue from its KV cache (`next_token_logprobs(groups=...)`).
"""

from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from qilin.errors import QilinError
from qilin.model.chat import stop_token_ids

log = logging.getLogger(__name__)

# A shared prefix shorter than this (in tokens) is never worth a separate forward pass and cache copies.
MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class Decoding:
    """How new tokens are chosen. top_k=0 turns off transformers' default top-k of 50, so that top_p
    alone decides the nucleus (vLLM's default, and what ChiMed-GPT-style sampling states)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None  # None: continue the current torch random stream (the caller seeded it)

    def generation_config(self, max_new_tokens: int, stop_ids: list[int], pad_id: int):
        from transformers import GenerationConfig

        extra = ({"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
                 if self.do_sample else {"num_beams": 1})
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=self.do_sample, eos_token_id=stop_ids,
                                pad_token_id=pad_id, use_cache=True, **extra)

    def describe(self) -> str:
        method = ("greedy (do_sample=False, num_beams=1)" if not self.do_sample else
                  f"sampled (temperature {self.temperature}, top_p {self.top_p}, top_k {self.top_k or 'off'}, "
                  f"seed {self.seed if self.seed is not None else 'the run seed'})")
        return f"{method}, stop at <|im_end|> / EOS; {CONTEXT_RULE}"


# lm-evaluation-harness's rule for generation (lm_eval/models/huggingface.py at 0068151d: HFLM.max_length
# and generate_until's left_truncate_len = max_length - max_gen_toks): past its positions a model's
# output is not what it was trained to give, and transformers only warns.
CONTEXT_RULE = "a prompt longer than the model's positions minus the new-token budget keeps its last tokens"


GREEDY = Decoding()


@dataclass
class LM:
    """A Hugging Face causal LM and its tokenizer, in eval mode."""

    model: object
    tokenizer: object
    bos: list[int] = field(init=False)  # [bos] when the tokenizer itself adds one (Llama), else [] (Qwen2)
    pad_id: int = field(init=False)
    stop_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        self.model.eval()
        bos = tok.bos_token_id
        self.bos = [bos] if bos is not None and tok("x")["input_ids"][:1] == [bos] else []
        self.stop_ids = stop_token_ids(tok)
        if not self.stop_ids:
            raise QilinError("the tokenizer has no eos token and no <|im_end|>: cannot tell where an answer ends")
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]
        self.pad_id = int(pad)

    # -------------------------------------------------------------------------------- encoding

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt; BOS prepended only where the tokenizer would add one and the text
        (e.g. a rendered chat template) does not already start with it."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if not self.bos or ids[:1] == self.bos else self.bos + ids

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, cut at the first stop token (what follows it is padding)."""
        for j, t in enumerate(ids):
            if t in self.stop_ids:
                ids = ids[:j]
                break
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------------------ generation

    def positions(self) -> int | None:
        """The sequence length the model was built for, from its config (the first of n_positions,
        max_position_embeddings, n_ctx, as lm-evaluation-harness reads it); None where it names none."""
        config = getattr(self.model, "config", None)
        for name in ("n_positions", "max_position_embeddings", "n_ctx"):
            n = getattr(config, name, None)
            if isinstance(n, int) and n > 0:
                return n
        return None

    def fit(self, ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Prompt ids cut to CONTEXT_RULE: each keeps at most positions - max_new_tokens last tokens."""
        n = self.positions()
        if n is None:
            return ids
        room = n - max_new_tokens
        if room < 1:
            raise QilinError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's {n} "
                             "positions; ask for fewer new tokens")
        cut = sum(len(x) > room for x in ids)
        if cut:
            log.warning("%d of %d prompts are longer than the model's %d positions minus %d new tokens: each "
                        "keeps its last %d tokens", cut, len(ids), n, max_new_tokens, room)
        return [x[-room:] if len(x) > room else x for x in ids]

    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                 sampling: "Decoding | None" = None) -> list[str]:
        """Continuations (new text only) of already-rendered prompts, stopping at the chat stop tokens
        / EOS: greedy by default, sampled with `sampling` (seeded once, before the first batch).

        Our own GenerationConfig replaces the model's: a checkpoint's sampling settings or
        repetition penalty (Qwen ships 1.05) must not change a protocol that says "greedy".
        """
        gen_cfg = (sampling or GREEDY).generation_config(max_new_tokens, self.stop_ids, self.pad_id)
        if sampling is not None and sampling.do_sample and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        ids = self.fit([self.encode(p) for p in prompts], max_new_tokens)
        out: list[str] = [""] * len(prompts)
        for idx in batches(ids, batch_size, "generate"):
            input_ids, mask = pad([ids[i] for i in idx], self.pad_id, left=True, device=self.device)
            gen = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg)
            for i, row in zip(idx, gen[:, input_ids.shape[1]:].tolist()):
                out[i] = self.decode(row)
        return out

    # --------------------------------------------------------------------------------- scoring

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: list[str], candidate_token_ids: list[int], batch_size: int = 16,
                            groups: list | None = None) -> list[list[float]]:
        """For each prompt, log p(candidate | prompt) for every candidate id (full-vocabulary
        softmax), from ONE forward pass per prompt: the `logits` multiple-choice protocol.

        Left padding with explicit position ids (so a padded row is numbered exactly like an
        unpadded one) puts every prompt's last token in the last column, so the output layer runs
        on that column only (`logits_to_keep=1`): with a tiny model's 8k-word vocabulary the output
        layer is a large share of the compute, and all other positions' logits are never needed.

        `groups` (a key per prompt, e.g. the CMMLU subject): the token prefix that all prompts of a
        group share (instruction + few-shot examples: most of a five-shot prompt) is run once, and
        its KV cache serves every batch of the group; only the rest of each prompt is computed. A
        group sharing less than half its prompts' length is batched with the others as usual (the
        extra pass and cache copies would cost more than they save).
        """
        ids = [self.encode(p) for p in prompts]
        cand = torch.tensor(candidate_token_ids, device=self.device)
        out: list[list[float]] = [[] for _ in prompts]
        keys = groups if groups is not None else [None] * len(prompts)
        shared, plain = {}, []  # group -> shared prefix length; prompts batched without a prefix
        for key in dict.fromkeys(keys):
            members = [i for i, k in enumerate(keys) if k == key]
            n = _common_prefix([ids[i] for i in members]) if key is not None and len(members) > 1 else 0
            if n >= max(MIN_SHARED_PREFIX, sum(len(ids[i]) for i in members) / len(members) / 2):
                shared[key] = (n, members)
            else:
                plain += members
        chunks = list(shared.values())
        for c in range(0, len(chunks), batch_size):  # up to batch_size groups share one prefix pass
            self._grouped(out, ids, chunks[c:c + batch_size], cand, batch_size)
        for batch in batches([ids[i] for i in plain], batch_size, "next-token"):
            idx = [plain[b] for b in batch]
            self._pick(out, idx, self._last_logits([ids[i] for i in idx]), cand)
        return out

    def _grouped(self, out: list, ids: list[list[int]], groups: list[tuple[int, list[int]]],
                 cand: torch.Tensor, batch_size: int) -> None:
        """One forward pass over the groups' prefixes (left-padded, batch = groups), then the
        prompts' own tokens in length-sorted batches that mix groups, each row continuing its
        group's row of the prefix cache."""
        prefixes = [ids[members[0]][:n] for n, members in groups]
        p_ids, p_mask = pad(prefixes, self.pad_id, left=True, device=self.device)
        p_pos = (p_mask.cumsum(1) - 1).clamp(min=0)
        res = self.model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True, logits_to_keep=1)
        cache = getattr(res, "cache", None) or res.past_key_values
        rows = [(g, i) for g, (_, members) in enumerate(groups) for i in members]
        for batch in batches([ids[i][groups[g][0]:] for g, i in rows], batch_size, "next-token"):
            sel = [rows[b] for b in batch]
            g_idx = torch.tensor([g for g, _ in sel], device=self.device)
            past = copy.deepcopy(cache)
            past.batch_select_indices(g_idx)
            logits = self._last_logits([ids[i][groups[g][0]:] for g, i in sel], past, p_mask[g_idx],
                                       torch.tensor([groups[g][0] for g, _ in sel], device=self.device))
            self._pick(out, [i for _, i in sel], logits, cand)

    @staticmethod
    def _pick(out: list, idx: list[int], logits: torch.Tensor, cand: torch.Tensor) -> None:
        for i, row in zip(idx, torch.log_softmax(logits, dim=-1)[:, cand].tolist()):
            out[i] = row

    def _last_logits(self, rows: list[list[int]], past=None, past_mask=None, offsets=None) -> torch.Tensor:
        """Next-token logits after each row; with `past` (a prefix cache, one row per row here,
        its padding mask `past_mask` and each row's real prefix length `offsets`) the rows continue it."""
        input_ids, mask = pad(rows, self.pad_id, left=True, device=self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = {}
        if past is not None:
            positions = positions + offsets[:, None]
            mask = torch.cat([past_mask, mask], 1)
            # transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this version takes
            cache = {_cache_arg(self.model): past}
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=bool(cache),
                          logits_to_keep=1, **cache).logits[:, -1].float()

    def sequence_logprob(self, prompts: list[str], continuations: list[str],
                         batch_size: int = 16) -> list[tuple[float, int]]:
        """(summed log-prob, token count) of each continuation given its prompt. Prompt and
        continuation are tokenised separately and concatenated (as TRL's DPO does), so the scored
        tokens are exactly the continuation's tokens. No truncation."""
        seqs, first = [], []
        for p, c in zip(prompts, continuations, strict=True):
            pi = self.encode(p)
            seqs.append(pi + self.tokenizer(c, add_special_tokens=False)["input_ids"])
            first.append(max(len(pi), 1))  # position 0 has no prediction
        return [(-nll, n) for nll, n in self._nll(seqs, first, batch_size, "log-likelihood")]

    def token_nll(self, texts: list[str], max_length: int, batch_size: int = 16) -> list[tuple[float, int]]:
        """Per text (summed NLL in nats, tokens scored). Every token after the first of each text
        is scored once: texts longer than `max_length` are cut into windows that overlap by one
        token, the overlap serving as the next window's first (context-only) token. No EOS is added
        and no BOS is scored (Qwen2-style tokenizers have none; where the tokenizer adds one it is
        context only), so the scored tokens match `metrics.unigram_nll`."""
        width = max_length - len(self.bos)
        if width < 2:
            raise QilinError(f"ppl max_length {max_length} is too small to score anything")
        seqs, first, owner = [], [], []
        for k, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            for s in range(0, max(len(ids) - 1, 0), width - 1):
                seqs.append(self.bos + ids[s:s + width])
                first.append(len(self.bos) + 1)
                owner.append(k)
        per = [[0.0, 0] for _ in texts]
        for k, (nll, n) in zip(owner, self._nll(seqs, first, batch_size, "perplexity")):
            per[k][0] += nll
            per[k][1] += n
        return [(s, n) for s, n in per]

    @torch.inference_mode()
    def _nll(self, seqs: list[list[int]], first: list[int], batch_size: int,
             desc: str) -> list[tuple[float, int]]:
        """Summed NLL of tokens seqs[i][first[i]:] given what precedes them, and their count."""
        out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
        for idx in batches(seqs, batch_size, desc, max_tokens=SCORE_TOKENS):
            input_ids, mask = pad([seqs[i] for i in idx], self.pad_id, left=False, device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
            targets = input_ids[:, 1:].clone()
            pos = torch.arange(1, input_ids.shape[1], device=self.device)[None, :]
            start = torch.tensor([first[i] for i in idx], device=self.device)[:, None]
            targets[(pos < start) | (mask[:, 1:] == 0)] = -100
            nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
            counts = (targets != -100).sum(1)
            for i, s, n in zip(idx, nll.sum(1).tolist(), counts.tolist()):
                out[i] = (s, n)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# Padded tokens per scoring batch (see _batches): bounds the logits tensor, rows x length x vocabulary.
SCORE_TOKENS = 8192


def load_lm(model_dir: str | Path) -> LM:
    """Load a local Hugging Face causal-LM folder (model + tokenizer with qilin's chat template) in
    fp32, eval mode.

    fp32: bf16 is 25-100x slower on the development CPUs (STACK.md); on a GPU the model moves
    there, still in fp32, so that numbers do not depend on the machine's precision.
    """
    from qilin.model.load import load_model

    model, tokenizer = load_model(model_dir, dtype="float32")
    if torch.cuda.is_available():
        model = model.to("cuda")
    return LM(model, tokenizer)


# ---------------------------------------------------------------------------------- helpers

def batches(seqs: list[list[int]], batch_size: int, desc: str, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Index batches, longest sequences first (an out-of-memory error shows up at once).

    `max_tokens` caps a batch's padded size (rows x longest row): scoring materialises logits for
    every position, rows x length x vocabulary floats, so 16 answers of 1,500 tokens with an 8k
    vocabulary would take 3 GB where a cap of 8,192 tokens takes about 0.3 GB.
    """
    from tqdm import tqdm

    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    chunks, chunk = [], []
    for i in order:
        longest = len(seqs[chunk[0]]) if chunk else len(seqs[i])
        if chunk and (len(chunk) == batch_size or (max_tokens and (len(chunk) + 1) * longest > max_tokens)):
            chunks.append(chunk)
            chunk = []
        chunk.append(i)
    if chunk:
        chunks.append(chunk)
    yield from tqdm(chunks, desc=desc, disable=not sys.stderr.isatty(), leave=False)


def _cache_arg(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix all `seqs` share, leaving each at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        n = next((j for j in range(n) if s[j] != first[j]), n)
    return max(n, 0)


def pad(seqs: list[list[int]], pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[r, sl] = torch.tensor(s, dtype=torch.long)
        mask[r, sl] = 1
    return ids.to(device), mask.to(device)
