"""Caption enhancement: a language model rewrites each clip's caption, the original kept beside it; with a
tiny random causal LM (saved here, loaded through transformers) and with a local OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.stages.caption_enhance.hf import LMRewriter
from curate.stages.caption_enhance.http import HTTPRewriter
from curate.stages.caption_enhance.tiny import save_tiny_causal_lm
from curate.stages.vlm_caption.http import HTTPCaptionError
from tests.curate.corpus import mixed_video, read_shards
from tests.curate.local_server import LocalServer


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return {"chat": str(save_tiny_causal_lm(root / "chat")),
            "plain": str(save_tiny_causal_lm(root / "plain", chat_template=False))}


class _RewriteServer(LocalServer):
    """An OpenAI-compatible chat-completions server on 127.0.0.1: answers with a rewrite of the user turn;
    answers 400 for captions holding ``refuse``, and 503 to the first try of every request when
    ``flaky``."""

    def __init__(self, refuse: str | None = None, flaky: bool = False):
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        outer = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                caption = req["messages"][1]["content"]
                with lock:
                    outer.requests.append(req)
                    tries = outer.seen[caption] = outer.seen.get(caption, 0) + 1
                if refuse and refuse in caption:
                    return self._send(400, {"error": "refused"})
                if flaky and tries == 1:
                    return self._send(503, {"error": "busy"})
                text = f"A cinematic shot: {caption}, in soft daylight, the camera moving slowly."
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

        self._serve(Handler)


def test_tiny_lm_rewrites_through_its_chat_template_and_batching_does_not_change_answers(tiny_lm):
    captions = ["a pan over hills", "balls bouncing", "a still room"]
    one = LMRewriter(tiny_lm["chat"], instruction="Rewrite.", max_new_tokens=8, batch_size=1).load()
    three = LMRewriter(tiny_lm["chat"], instruction="Rewrite.", max_new_tokens=8, batch_size=3).load()
    answers = one.rewrite(captions)
    assert answers == three.rewrite(captions)
    assert all(a and a not in captions for a in answers)
    prompt = one.prompt("a pan")
    assert "<|im_start|>system\nRewrite.<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    plain = LMRewriter(tiny_lm["plain"], instruction="Rewrite.", max_new_tokens=4).load()
    assert plain.prompt("a pan") == "Rewrite.\n\nCaption: a pan\nDescription:"
    assert plain.rewrite(["a pan"])[0]


def test_missing_language_model_is_a_clear_error(tmp_path):
    from curate.errors import CurateError

    with pytest.raises(CurateError, match="cannot load language model"):
        LMRewriter(str(tmp_path / "missing"), instruction="x").load()


def test_http_rewriter_sends_instruction_and_caption_and_retries():
    with _RewriteServer(flaky=True) as server:
        rw = HTTPRewriter(server.url, "served-lm", instruction="Make it long.", concurrency=2, retries=1,
                          backoff_s=0.01)
        out = rw.rewrite(["a red car", "a blue boat"])
    assert out == [f"A cinematic shot: {c}, in soft daylight, the camera moving slowly." for c in ("a red car", "a blue boat")]
    assert len(server.requests) == 4  # each failed once (503) and was retried
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Make it long."}
    assert server.requests[0]["model"] == "served-lm"
    with _RewriteServer(refuse="car") as server:
        with pytest.raises(HTTPCaptionError, match="HTTP 400"):
            HTTPRewriter(server.url, "m", instruction="x", retries=3, backoff_s=0.01).rewrite(["a red car"])
        assert len(server.requests) == 1  # a client error is not retried


def _check_outputs(out, model: str) -> list[dict]:
    rows = [r for r in pq.read_table(out / "clips.parquet").to_pylist() if r["status"] == "kept"]
    samples = read_shards(out)
    assert rows
    for r in rows:
        assert r["caption_original"] and r["caption"] and r["caption"] != r["caption_original"]
        assert r["caption_model"] == "timed_text" and r["caption_enhance_model"] == model
        meta = json.loads(samples[r["clip_id"]]["json"])
        assert meta["caption"] == r["caption"] and meta["caption_original"] == r["caption_original"]
        assert meta["caption_enhance_model"] == model
        assert samples[r["clip_id"]]["txt"].decode() == r["caption"]
    return rows


@pytest.mark.slow
def test_run_with_tiny_causal_lm(tiny_lm, tmp_path):
    mixed_video(tmp_path / "v.mp4", seed=0)
    out = tmp_path / "out"
    code = main(["run", str(tmp_path / "v.mp4"), "--out", str(out), "--workers", "0",
                 "--set", "models.caption_enhance.enabled=true", "--set", f"models.caption_enhance.model={tiny_lm['chat']}",
                 "--set", "models.caption_enhance.max_new_tokens=8"])
    assert code == 0
    rows = _check_outputs(out, tiny_lm["chat"])
    assert {r["caption_original"] for r in rows} <= {"a pan over hills 0", "a still room", "balls bouncing"}


@pytest.mark.slow
def test_run_with_server_records_a_refused_source_as_failed(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    mixed_video(videos / "a.mp4", seed=0)
    mixed_video(videos / "b.mp4", seed=1)  # its pan is captioned "a pan over hills 1": refused
    out = tmp_path / "out"
    with _RewriteServer(refuse="hills 1") as server:
        code = main(["run", str(videos), "--out", str(out), "--workers", "1",
                     "--set", "models.caption_enhance.enabled=true", "--set", "models.caption_enhance.backend=openai",
                     "--set", f"models.caption_enhance.base_url={server.url}",
                     "--set", "models.caption_enhance.model=served", "--set", "models.caption_enhance.retries=0"])
    assert code == 3
    assert "1 of 2 sources failed" in capsys.readouterr().out.strip().splitlines()[-1]
    sources = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(out / "sources.parquet").to_pylist()}
    assert sources["a.mp4"]["status"] == "done"
    assert sources["b.mp4"]["status"] == "failed"
    assert sources["b.mp4"]["reason"].startswith("caption_enhance: HTTP 400")
    rows = _check_outputs(out, "served")
    assert all(r["source"].endswith("a.mp4") for r in rows)
    assert rows[0]["caption"].startswith("A cinematic shot: ")
