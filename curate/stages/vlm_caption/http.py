"""Captions from an OpenAI-compatible chat-completions server (vLLM, or any server speaking that protocol).

Each window's frames go as JPEG data URLs in one user message after the prompt; ``concurrency`` requests are
in flight at once; connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff,
other answers fail at once with the server's message. Only the standard library is used.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from curate.errors import CurateError


class HTTPCaptionError(CurateError):
    pass


def jpeg_data_url(frame: np.ndarray, quality: int = 90) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class HTTPCaptioner:
    def __init__(self, base_url: str, model: str, *, prompt: str, max_new_tokens: int = 64, concurrency: int = 8,
                 retries: int = 3, timeout_s: float = 120.0, api_key_env: str = "OPENAI_API_KEY",
                 backoff_s: float = 0.5):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.api_key_env = api_key_env

    def load(self) -> HTTPCaptioner:
        return self  # nothing to load; the server holds the model

    def _body(self, frames: Sequence[np.ndarray]) -> bytes:
        content = [{"type": "text", "text": self.prompt}]
        content += [{"type": "image_url", "image_url": {"url": jpeg_data_url(f)}} for f in frames]
        return json.dumps({"model": self.model_name, "messages": [{"role": "user", "content": content}],
                           "max_tokens": self.max_new_tokens, "temperature": 0.0}).encode()

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    answer = json.loads(resp.read())
                return str(answer["choices"][0]["message"]["content"]).strip()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace")
                last = f"HTTP {exc.code} from {self.url}: {' '.join(detail.split())}"
                if exc.code != 429 and exc.code < 500:
                    raise HTTPCaptionError(last) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{self.url}: {getattr(exc, 'reason', exc)}"
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise HTTPCaptionError(f"{self.url} answered without choices[0].message.content ({exc})") from None
        raise HTTPCaptionError(f"gave up after {self.retries + 1} tries: {last}")

    def caption(self, frame_sets: Sequence[Sequence[np.ndarray]]) -> list[str]:
        """One caption per window, in order; up to ``concurrency`` requests at once."""
        bodies = [self._body(f) for f in frame_sets]
        if len(bodies) <= 1:
            return [self._post(b) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(self._post, bodies))
