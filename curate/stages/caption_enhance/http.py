"""Enhanced captions from an OpenAI-compatible chat-completions server (vLLM or any server speaking that
protocol): the instruction as the system turn, the caption as the user turn; retries, backoff and
concurrency as in the VLM caption client, whose transport this reuses."""

from __future__ import annotations

import json
from collections.abc import Sequence

from curate.stages.vlm_caption.http import HTTPCaptioner


class HTTPRewriter(HTTPCaptioner):
    def __init__(self, base_url: str, model: str, *, instruction: str, **kwargs):
        super().__init__(base_url, model, prompt=instruction, **kwargs)

    def _body(self, caption: str) -> bytes:  # type: ignore[override]
        messages = [{"role": "system", "content": self.prompt}, {"role": "user", "content": caption}]
        return json.dumps({"model": self.model_name, "messages": messages, "max_tokens": self.max_new_tokens,
                           "temperature": 0.0}).encode()

    def rewrite(self, captions: Sequence[str]) -> list[str]:
        """One answer per caption, in order; up to ``concurrency`` requests at once."""
        return self.caption(captions)  # type: ignore[arg-type]
