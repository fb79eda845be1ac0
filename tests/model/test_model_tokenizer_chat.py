from qilin.model.chat import (CHAT_TEMPLATE, EOS, IM_END, IM_START, ensure_chat_template, prompt_text,
                              stop_token_ids)
from qilin.model.tokenizer import train_tokenizer


def test_option_letters_are_single_tokens(micro_tokenizer):
    for letter in "ABCDE":
        assert len(micro_tokenizer(letter).input_ids) == 1
    # after the exam prompt the letter is its own token, not glued to the colon
    ids = micro_tokenizer("答案：A").input_ids
    assert micro_tokenizer.convert_ids_to_tokens(ids[-1:]) == ["A"]
    assert micro_tokenizer.convert_ids_to_tokens(micro_tokenizer("A型血").input_ids[:1]) == ["A"]


def test_round_trip_chinese(micro_tokenizer, corpus_lines):
    for text in corpus_lines[:20] + ["未见过的字：麒麟 Qilin 2024！\n第二行"]:
        ids = micro_tokenizer(text).input_ids
        assert micro_tokenizer.decode(ids) == text


def test_special_tokens(micro_tokenizer):
    vocab = micro_tokenizer.get_vocab()
    assert {EOS, IM_START, IM_END} <= set(vocab)
    assert micro_tokenizer.eos_token == EOS and micro_tokenizer.pad_token == EOS
    assert micro_tokenizer(IM_START + "user").input_ids[0] == vocab[IM_START]  # never split
    assert stop_token_ids(micro_tokenizer) == [vocab[IM_END], vocab[EOS]]


def test_chat_template_renders(micro_tokenizer):
    messages = [{"role": "system", "content": "你是医生"}, {"role": "user", "content": "头痛怎么办？"},
                {"role": "assistant", "content": "多休息。"}]
    text = micro_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == ("<|im_start|>system\n你是医生<|im_end|>\n<|im_start|>user\n头痛怎么办？<|im_end|>\n"
                    "<|im_start|>assistant\n多休息。<|im_end|>\n")
    assert prompt_text(micro_tokenizer, messages[:2]) == text[: text.index("多休息")]
    # the assistant mask covers the answer and its <|im_end|>, nothing else
    out = micro_tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert micro_tokenizer.decode(masked) == "多休息。<|im_end|>"


def test_saved_tokenizer_reloads_with_template(micro_tokenizer, micro_dir):
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(micro_dir / "tokenizer"))
    assert again.chat_template == CHAT_TEMPLATE
    assert again("答案：C").input_ids == micro_tokenizer("答案：C").input_ids


def test_user_tokenizer_without_chatml_keeps_its_template(tmp_path, corpus_lines):
    tok = train_tokenizer(corpus_lines[:30], 300, tmp_path / "t")
    # simulate a foreign tokenizer: its own template, no ChatML tokens (we never add tokens to it)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>", vocab={"<unk>": 0, "</s>": 1, "a": 2}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    foreign.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert ensure_chat_template(foreign) is False
    assert foreign.chat_template.startswith("{% for m")
    assert foreign.pad_token == "</s>" and stop_token_ids(foreign) == [1]
    assert ensure_chat_template(tok) is True
