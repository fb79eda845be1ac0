"""Prompt builders of the benchmarks' own evaluation code, one function per upstream prompt
(docs/PROTOCOLS.md cites repository, file and commit for each).

Items are qilin's evaluation records (DESIGN.md): {"question", "options": {"A": text, ...},
"answer", ...} for multiple choice, {"description", "turns": [{"question", "answer"}]} for CMB-Clin.
Options are kept in the record's order (the file's), as the upstream code reads them.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

# ------------------------------------------------------------------------------------ CMExam


def cmexam_options_text(options: Mapping[str, str]) -> str:
    """The CMExam CSV's Options cell, `A text\\nB text...`, rebuilt from {"A": text}."""
    return "\n".join(f"{letter} {text}" for letter, text in options.items())


def qilin_med_cmexam_prompt(item: Mapping) -> str:
    """Qilin-Med's CMExam prompt (williamliujl/Qilin-Med, eval/CMExam/evaluators/baichuan.py,
    `format_example(..., include_answer=False)`, commit 9b96dc6232af1685f46db6d63f7cfc1dee9d6ed6):
    `{Question}\\n{Options}\\n答案：`, raw (no chat template). Upstream builds a 5-shot history in
    few-shot mode but never passes it to `generate`, so generation is zero-shot."""
    return f"{item['question']}\n{cmexam_options_text(item['options'])}\n答案："


CMEXAM_RESPONSE_SPLIT = "### 回答:"


def cmexam_lora_prompt(item: Mapping) -> str:
    """CMExam's own inference prompt (williamliujl/CMExam, commit
    fadb22c89beb1b7115dc36460ba792eb96b7b972): instruction template 1 of
    src/preprocess/prompt_templates.py (`问题: {}, \\n 选项: {}`), stripped as src/LoRA/infer.py
    reads it, inside src/LoRA/templates/med_template.json (`{instruction}\\n### 回答:\\n`)."""
    instruction = f"问题: {item['question']}, \n 选项: {cmexam_options_text(item['options'])}".strip()
    return f"{instruction}\n{CMEXAM_RESPONSE_SPLIT}\n"


def cmexam_lora_response(continuation: str) -> str:
    """The model_result CMExam's infer.py stores: `Prompter.get_response` takes the decoded
    prompt + continuation, the piece after the first `### 回答:` up to any next one, stripped;
    on the continuation alone that is its piece before any `### 回答:`, stripped."""
    return continuation.split(CMEXAM_RESPONSE_SPLIT)[0].strip()


# ------------------------------------------------------------------------------------- CMMLU

CMMLU_MAX_LENGTH = 2048  # src/hf_causal_model.py, qwen2.py ...: --max_length default


def cmmlu_format_example(item: Mapping, include_answer: bool = True, cot: bool = False) -> str:
    """CMMLU's `format_example` (haonan-li/CMMLU, src/mp_utils.py, commit
    d6e7b716d8ac694f38969a6c0407437d1fded799): `题目：{question}` then `\\n{L}. {option}` for each
    option, then `\\n答案是：` (cot: `\\n逐步分析并给出答案选项。`), then with the answer `{answer}\\n\\n`."""
    text = "题目：" + item["question"]
    text += "".join(f"\n{letter}. {option}" for letter, option in item["options"].items())
    text += "\n逐步分析并给出答案选项。" if cot else "\n答案是："
    if include_answer:
        text += f"{item['answer']}\n\n"
    return text


def cmmlu_prompt(subject_cn: str, shots: Sequence[Mapping], item: Mapping,
                 count_tokens: Callable[[str], int] | None = None,
                 max_length: int = CMMLU_MAX_LENGTH, cot: bool = False) -> tuple[str, int]:
    """CMMLU's `gen_prompt` (same file and commit): (prompt, number of shots kept).

    Prompt = `以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\\n\\n` (cot: `...请分析并选出正确答案。`)
    + the shots (`cmmlu_format_example` with answers, in the given order: upstream takes the first
    k rows of the subject's dev file) + the item without its answer.

    With `count_tokens` (upstream: `len(tokenizer.encode(text))`, special tokens included, each
    piece encoded on its own) the length rule applies: if the instruction and the item alone exceed
    `max_length`, the prompt is the item alone (no instruction, no shots); otherwise, while the
    shots' tokens sum to at least `max_length` minus the instruction and item, EVERY shot of the
    greatest length is removed (ties go together; the longest go first, not the last). Without
    `count_tokens` nothing is dropped (upstream with tokenizer=None).
    """
    intro = ("以下是关于{}的单项选择题，请分析并选出正确答案。\n\n" if cot
             else "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n").format(subject_cn)
    end = cmmlu_format_example(item, include_answer=False, cot=cot)
    examples = [cmmlu_format_example(s) for s in shots]
    if count_tokens is None:
        return intro + "".join(examples) + end, len(examples)
    fixed = count_tokens(intro) + count_tokens(end)
    if fixed > max_length:
        return end, 0
    kept = [(e, count_tokens(e)) for e in examples]
    while kept and sum(n for _, n in kept) >= max_length - fixed:
        longest = max(n for _, n in kept)
        kept = [(e, n) for e, n in kept if n != longest]
    return intro + "".join(e for e, _ in kept) + end, len(kept)


def hf_token_counter(tokenizer) -> Callable[[str], int]:
    """`len(tokenizer.encode(text))` with the tokenizer's default special tokens, as CMMLU counts."""
    return lambda text: len(tokenizer.encode(text))


# ----------------------------------------------------------------------------------- CMB-Clin

CMB_CLIN_OPENING = "以下是一位病人的病例："


def cmb_clin_messages(item: Mapping) -> list[list[dict]]:
    """CMB-Clin's conversations, one per question (FreedomIntelligence/CMB, README.md "CMB-Clin
    Prompt", commit 6c8ece46097dae736c6805dd3b831e1a38c08971): turn 1 is
    `以下是一位病人的病例：\\n{description}\\n{question 1}`; turn k is question k alone, after the
    earlier turns with their REFERENCE solutions as the assistant's answers (as the repository's
    workers build the history, e.g. workers/huatuo_chat.py `collate_conv`), never the model's own.
    The model's chat template and system prompt are applied by the caller."""
    convs, history = [], []
    for k, turn in enumerate(item["turns"]):
        content = f"{CMB_CLIN_OPENING}\n{item['description']}\n{turn['question']}" if k == 0 else turn["question"]
        conv = history + [{"role": "user", "content": content}]
        convs.append(conv)
        history = conv + [{"role": "assistant", "content": turn["answer"]}]
    return convs
