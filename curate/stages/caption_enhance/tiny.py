"""A tiny randomly initialised causal LM (the real Qwen2 class, a byte-level tokenizer and a ChatML
template), saved to a folder and loaded back through the real loading code: tests and demos use it
because nothing may download here."""

from __future__ import annotations

from pathlib import Path

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_causal_lm(path: str | Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Save a randomly initialised ``Qwen2ForCausalLM`` with its tokenizer to ``path``. Special tokens are
    and blank tokens are kept out of its answers (so a random model still says something)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from curate.stages.vlm_caption.tiny import byte_level_tokenizer

    path = Path(path)
    tokenizer = byte_level_tokenizer(vocab_size=512)
    special = tokenizer.all_special_ids
    # tokens that decode to white space only (or to part of a character) are kept out of answers too: a random model would otherwise
    # often answer with blank lines, which the stage rightly counts as a failure
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip() or "\ufffd" in tokenizer.decode([i])]
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.suppress_tokens = sorted({*special, *blank} - {eos})
    model.generation_config.min_new_tokens = 4
    model.save_pretrained(path)
    if chat_template:
        tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path
