"""THE chat template, used by training, evaluation, RAG prompts and serving.

ChatML, as in Qwen:

    <|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n{content}<|im_end|>\n

Each assistant turn's content *and its `<|im_end|>`* sit inside `{% generation %}` markers, so
that TRL's assistant-only loss trains the model to end its turn (METHODS.md 1: "EOS after each
answer is a target"); the newline after `<|im_end|>` is outside, like the role header.

Special tokens:
    <|endoftext|>  end of a pre-training document (the tokenizer's eos) and padding
    <|im_start|>   start of a turn, followed by the role and a newline
    <|im_end|>     end of a turn; generation stops on it (see `stop_token_ids`)

User models: `ensure_chat_template` gives a model our template only if its tokenizer already has
`<|im_start|>` and `<|im_end|>` as tokens (Qwen and other ChatML models). A model without them
keeps its own template (we never add tokens to a user's model: that would need new, untrained
embedding rows); if it has no template at all it gets ours anyway, with the markers spelled out
as ordinary text pieces, and generation then stops on its eos token only.
"""

from __future__ import annotations

import logging

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END]

log = logging.getLogger(__name__)

# Whitespace control (`{%-`/`-%}`) keeps the rendering byte-exact; `generation` wraps exactly the
# tokens the model must produce after `<|im_start|>assistant\n`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def ensure_chat_template(tokenizer, *, own: bool = False) -> bool:
    """Give `tokenizer` our ChatML template where it can take it; True if it now uses ours.

    `own=True` (tokenizers we train): add any missing special tokens, make `<|endoftext|>` the eos
    and pad token. Otherwise the tokenizer's tokens are left alone (module docstring).
    """
    if own:
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.eos_token = EOS
        tokenizer.pad_token = EOS
    vocab = tokenizer.get_vocab()
    has_chatml = IM_START in vocab and IM_END in vocab
    if has_chatml or own or not tokenizer.chat_template:
        if not has_chatml:
            log.warning("tokenizer has no <|im_start|>/<|im_end|> tokens and no chat template: using ChatML "
                        "as plain text; generation stops on the eos token only")
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:  # batching needs one; eos is the usual choice for causal LMs
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.chat_template == CHAT_TEMPLATE


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The text the model continues from: the conversation plus the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end a generated answer: `<|im_end|>` (end of turn) and the eos token."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[IM_END]] if IM_END in vocab else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
