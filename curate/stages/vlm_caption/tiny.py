"""A tiny randomly initialised Qwen2-VL (the real class, with its processor's parts), saved to a folder and
loaded back through the real loading code. Tests, the demo and the benchmark use it because nothing may
download here; with ``real_size=True`` the builder gives real-size shapes (random weights) for GPU
throughput runs."""

from __future__ import annotations

from pathlib import Path

import torch

# The chat template of our tiny Qwen2-VL: the ChatML layout Qwen models use, with one vision block per image.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"]
_CORPUS = [
    "A person rides a bike down a street while cars pass by in the background.",
    "The camera pans across a kitchen where someone flips a pancake in a pan.",
    "A rocket launches into a clear blue sky, leaving a trail of smoke and fire.",
    "Describe the video in one sentence. What happens in these frames?",
    "a man talks on the phone in a car; trees and houses move past the window.",
]


def _byte_level_tokenizer(vocab_size: int):
    """A byte-level BPE trained on a few sentences: builds offline in milliseconds, decodes any bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, padding_side="left")


byte_level_tokenizer = _byte_level_tokenizer  # shared with the tiny causal LM of caption_enhance


def save_tiny_qwen2vl(path: str | Path, *, seed: int = 0, real_size: bool = False) -> Path:
    """Save a randomly initialised ``Qwen2VLForConditionalGeneration`` with its processor to ``path``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    tokenizer = _byte_level_tokenizer(vocab_size=512)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIALS}
    if real_size:  # the shapes of Qwen2-VL-2B-Instruct
        text = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                    num_attention_heads=12, num_key_value_heads=2)
        vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16)
        pixels = dict(min_pixels=56 * 56, max_pixels=448 * 448)
    else:
        text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1)
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2)
        pixels = dict(min_pixels=56 * 56, max_pixels=56 * 56)
    text.update(max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": _mrope_section(text["hidden_size"] // text["num_attention_heads"])})
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    # The parts of a Qwen2-VL processor, saved as a real checkpoint holds them (Qwen2VLProcessor itself
    # cannot be built without torchvision, which its video half needs).
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(**pixels).save_pretrained(path)
    return path


def _mrope_section(head_dim: int) -> list[int]:
    # Multimodal RoPE splits half the head dim over (time, height, width); Qwen2-VL uses 1/4, 3/8, 3/8.
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]
