"""Frozen T5/UMT5 text encoder: prompts -> (embeddings (B, L, D), mask (B, L) bool) at a fixed length.

Padded positions are zero vectors in the embeddings (Wan's convention: the DiT sees zero-padded text)
and False in the mask. `create_tiny_text_encoder` writes a small random T5 encoder with the byte-level
ByT5 tokenizer (no vocabulary file), so CPU runs need no download and generation reloads the very
same encoder from the run folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch

from diffusion.dtypes import parse_dtype

_CONFIG_FILE = "text_encoder.json"


@dataclass
class TextEncoderConfig:
    kind: str = "t5"  # "t5" | "umt5"
    path: str | None = None  # local folder or hub id holding the encoder weights and the tokenizer
    max_length: int = 64
    dim: int | None = None  # checked against the model's d_model when given
    subfolder_model: str | None = None  # e.g. "text_encoder" inside a diffusers pipeline folder
    subfolder_tokenizer: str | None = None  # e.g. "tokenizer"
    dtype: str = "float32"
    # Words of a word-level tokenizer for the tiny random encoder a from-scratch run creates (a closed
    # vocabulary such as the demo's); None: the byte-level ByT5 tokenizer. A random encoder over bytes
    # spreads each word over several positions it has never learnt to join; whole words give the DiT one
    # distinct vector per word to attend to. Unknown words map to one shared token.
    vocab: list[str] | None = None

    def __post_init__(self) -> None:
        if self.vocab is not None:
            self.vocab = [str(w) for w in self.vocab]
            if not self.vocab or any(not w or w != w.strip().lower() or " " in w for w in self.vocab):
                raise ValueError("text.vocab must be a non-empty list of lower-case words without spaces")
        if self.kind not in ("t5", "umt5"):
            raise ValueError(f"text encoder kind must be 't5' or 'umt5', got {self.kind!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")



def quiet_unless_tty() -> None:
    """transformers' own progress bars (loading, saving) only on a terminal, like every bar of ours."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class TextEncoder:
    def __init__(self, config: TextEncoderConfig, model=None, tokenizer=None):
        from transformers import AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        quiet_unless_tty()

        if config.path is None and (model is None or tokenizer is None):
            raise ValueError("text encoder needs a path (local folder or hub id)")
        self.config = config
        if model is None:
            cls = T5EncoderModel if config.kind == "t5" else UMT5EncoderModel
            # safetensors only: a pickle-based .bin in a folder is never loaded
            kw = {"dtype": parse_dtype(config.dtype), "use_safetensors": True}
            if config.subfolder_model:
                kw["subfolder"] = config.subfolder_model
            model = cls.from_pretrained(config.path, **kw)
        if tokenizer is None:
            kw = {"subfolder": config.subfolder_tokenizer} if config.subfolder_tokenizer else {}
            tokenizer = AutoTokenizer.from_pretrained(config.path, **kw)
        self.model = model.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.dim = int(model.config.d_model)
        if config.dim is not None and config.dim != self.dim:
            raise ValueError(f"text encoder dim {self.dim} does not match the configured dim {config.dim}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "TextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            prompts = [prompts]
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.config.max_length,
                             truncation=True, add_special_tokens=True, return_attention_mask=True,
                             return_tensors="pt")
        ids = tok.input_ids.to(self.device)
        mask = tok.attention_mask.to(self.device).bool()
        emb = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        emb = emb.float() * mask[..., None]  # zero the padding, as Wan does
        return emb, mask

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Write weights, tokenizer and config so `TextEncoder.from_pretrained(directory)` reloads it."""
        os.makedirs(directory, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        cfg = asdict(self.config)
        cfg.update(path=None, subfolder_model=None, subfolder_tokenizer=None)
        tmp = os.path.join(directory, _CONFIG_FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(cfg, fh, indent=2)
        os.replace(tmp, os.path.join(directory, _CONFIG_FILE))

    @classmethod
    def from_pretrained(cls, directory: str, config: TextEncoderConfig | None = None) -> "TextEncoder":
        """Load from a folder written by `save` / `create_tiny_text_encoder`, or any T5/UMT5 folder or hub
        id when `config` says which."""
        if config is None:
            path = os.path.join(directory, _CONFIG_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{directory}: no {_CONFIG_FILE} (pass a TextEncoderConfig)")
            from dataload.files import read_regular

            config = TextEncoderConfig(**json.loads(read_regular(path, "text encoder config", 1 << 20)))
            config.path = directory
        elif config.path is None:
            config = TextEncoderConfig(**{**asdict(config), "path": directory})
        return cls(config)


def word_tokenizer(vocab: list[str]):
    """A word-level tokenizer over `vocab` (lower-cased, split on whitespace and punctuation, `</s>`
    appended as T5 does), as a transformers fast tokenizer that saves and reloads with the run."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    ids = {w: i for i, w in enumerate(dict.fromkeys(specials + list(vocab)))}
    tok = Tokenizer(WordLevel(ids, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", ids["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def create_tiny_text_encoder(directory: str, dim: int = 64, max_length: int = 64, num_layers: int = 2,
                             num_heads: int = 4, seed: int = 0, vocab: list[str] | None = None) -> str:
    """Save a tiny random T5 encoder + its tokenizer (ByT5 bytes, or words of `vocab`) to `directory`;
    returns the directory."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    quiet_unless_tty()

    tokenizer = ByT5Tokenizer() if vocab is None else word_tokenizer(vocab)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=dim, d_kv=dim // num_heads, d_ff=2 * dim,
                   num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=8,
                   relative_attention_max_distance=32, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                   is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(seed)
    model = T5EncoderModel(cfg)
    enc = TextEncoder(TextEncoderConfig(kind="t5", path=None, max_length=max_length, dim=dim, vocab=vocab),
                      model=model, tokenizer=tokenizer)
    enc.save(directory)
    return directory
