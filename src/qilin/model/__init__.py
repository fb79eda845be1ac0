"""Models: the chat template, tokenizer training, the tiny default model, loading/LoRA/saving."""
