"""Enhanced captions from a transformers causal language model (any ``AutoModelForCausalLM``), from a local
folder or hub id. With a chat template the instruction is the system turn and the caption the user turn;
without one, a plain text prompt carries both. Generation is greedy (the same caption always gives the same
answer) and batched with left padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from curate.common.device import pick_device, pick_dtype
from curate.errors import CurateError


class LMRewriter:
    def __init__(self, model: str, *, instruction: str, max_new_tokens: int = 256, batch_size: int = 8,
                 device: str = "auto", dtype: str = "auto"):
        self.model_name = model
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = None
        self.tokenizer = None

    def load(self) -> LMRewriter:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            model = AutoModelForCausalLM.from_pretrained(self.model_name, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise CurateError(f"cannot load language model {self.model_name!r}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
        tokenizer.padding_side = "left"  # generation continues from the right end of every row
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        return self

    def prompt(self, caption: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            messages = [{"role": "system", "content": self.instruction}, {"role": "user", "content": caption}]
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{self.instruction}\n\nCaption: {caption}\nDescription:"

    @torch.inference_mode()
    def rewrite(self, captions: Sequence[str]) -> list[str]:
        """One answer per caption, in order, ``batch_size`` captions per generate() call."""
        if self.model is None:
            self.load()
        out: list[str] = []
        for i in range(0, len(captions), self.batch_size):
            prompts = [self.prompt(c) for c in captions[i:i + self.batch_size]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            out.extend(t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out
