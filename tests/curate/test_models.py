"""Model paths through their real loading and inference code: a tiny random Qwen2-VL and CLIP saved to a
temporary folder and loaded back by path, an MLP head from safetensors, a local OpenAI-protocol server."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from curate.common.frames import clip_windows, decode_at, sample_times
from curate.errors import CurateError
from curate.stages.clip_scores.aesthetic import AestheticHead, reduce_scores
from curate.stages.clip_scores.embedding import ClipEncoder, clip_embedding
from curate.stages.clip_scores.tiny import save_aesthetic_head, save_tiny_clip
from curate.stages.vlm_caption.hf import VLMCaptioner
from curate.stages.vlm_caption.http import HTTPCaptioner, HTTPCaptionError
from curate.stages.vlm_caption.tiny import save_tiny_qwen2vl
from tests.curate.local_server import LocalServer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {"vlm": str(save_tiny_qwen2vl(root / "vlm")), "clip": str(save_tiny_clip(root / "clip")),
            "head": str(save_aesthetic_head(root / "head.safetensors", 16, hidden=(8,)))}


def _frames(n: int, seed: int, size=(48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


# --- frame sampling --------------------------------------------------------------------------------------

def test_windows_and_times():
    assert clip_windows(0.0, 5.0, 10.0) == [(0.0, 5.0)]
    assert clip_windows(2.0, 22.0, 10.0) == [(2.0, 12.0), (12.0, 22.0)]
    assert clip_windows(0.0, 23.0, 10.0) == [(0.0, 10.0), (10.0, 23.0)]  # a short remainder joins the last
    assert clip_windows(0.0, 26.0, 10.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 26.0)]
    assert clip_windows(0.0, 26.0, 0.0) == [(0.0, 26.0)]
    assert sample_times(0.0, 4.0, fps=1.0, max_frames=8) == [0.5, 1.5, 2.5, 3.5]
    assert sample_times(0.0, 4.0, fps=1.0, max_frames=2) == [1.0, 3.0]
    assert sample_times(1.0, 1.2, fps=1.0, max_frames=4) == [pytest.approx(1.1)]


def test_decode_at_picks_nearest_frame(tmp_path):
    from dataload.synthetic import write_video

    # frame i is a flat grey of level 8 * i: the decoded level tells which frame was picked
    frames = [np.full((32, 48, 3), 8 * i, dtype=np.uint8) for i in range(25)]
    path = tmp_path / "levels.mp4"
    write_video(path, frames, fps=10)
    got = decode_at(str(path), [1.04, 0.0, 2.4, 0.26, 99.0], max_side=24)
    levels = [int(round(f.mean() / 8)) for f in got]
    assert levels == [10, 0, 24, 3, 24]
    assert got[0].shape == (16, 24, 3)


# --- VLM -------------------------------------------------------------------------------------------------

def test_vlm_loads_real_class_and_batching_does_not_change_captions(tiny):
    cap = VLMCaptioner(tiny["vlm"], prompt="Describe the clip.", max_new_tokens=6, batch_size=3).load()
    assert type(cap.model).__name__ == "Qwen2VLForConditionalGeneration"
    sets = [_frames(3, 1), _frames(1, 2), _frames(2, 3), _frames(3, 1)]
    batched = cap.caption(sets)
    cap.batch_size = 1
    single = cap.caption(sets)
    assert batched == single
    assert len(batched) == 4 and all(isinstance(t, str) and t for t in batched)
    assert batched[0] == batched[3]  # same frames, same (greedy) caption
    assert batched[0] != batched[1]  # the images reach the model: other frames, another caption


def test_vlm_prompt_expands_one_token_per_merged_patch(tiny):
    cap = VLMCaptioner(tiny["vlm"], prompt="x", max_new_tokens=2).load()
    text = cap.processor.apply_chat_template(cap._messages(2), add_generation_prompt=True, tokenize=False)
    enc = cap.processor(text=[text], images=[[f for f in _frames(2, 0)]], return_tensors="pt")
    per_image = enc["image_grid_thw"].prod(-1) // cap.model.config.vision_config.spatial_merge_size ** 2
    assert int((enc["input_ids"] == cap.model.config.image_token_id).sum()) == int(per_image.sum())


def test_vlm_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CurateError, match="cannot load VLM"):
        VLMCaptioner(str(tmp_path / "nope"), prompt="x").load()


# --- OpenAI-compatible HTTP ------------------------------------------------------------------------------

class _ChatServer(LocalServer):
    """A chat-completions endpoint on 127.0.0.1: answers with facts it decoded from the request (image count
    and mean level of the first JPEG), fails the first try of each distinct request with 503, and records
    how many requests were in flight at once."""

    def __init__(self, fail_first: bool = True, status: int | None = None):
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = json.loads(body)
                with outer.lock:
                    outer.requests.append(req)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    key = json.dumps(req, sort_keys=True)
                    tries = outer.seen[key] = outer.seen.get(key, 0) + 1
                try:
                    threading.Event().wait(0.05)  # long enough for requests to overlap
                    if status is not None or (fail_first and tries == 1):
                        self.send_response(status or 503)
                        self.end_headers()
                        self.wfile.write(b'{"error": "busy"}')
                        return
                    from PIL import Image

                    parts = req["messages"][0]["content"]
                    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
                    img = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
                    text = f"{req['model']}: {len(urls)} images, level {round(np.asarray(img).mean() / 16)}"
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self._serve(Handler)


def test_http_captions_with_concurrency_and_retries():
    sets = [[np.full((32, 32, 3), 16 * k, dtype=np.uint8)] * (1 + k % 3) for k in range(6)]
    with _ChatServer() as server:
        cap = HTTPCaptioner(server.url, "served-vlm", prompt="Describe.", concurrency=3, retries=2, backoff_s=0.01)
        texts = cap.caption(sets)
    assert texts == [f"served-vlm: {1 + k % 3} images, level {k}" for k in range(6)]
    assert len(server.requests) == 12  # every request failed once (503) and was retried once
    assert 1 < server.max_in_flight <= 3
    first = server.requests[0]["messages"][0]["content"]
    assert first[0] == {"type": "text", "text": "Describe."}
    assert first[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_http_client_errors_are_not_retried_and_give_one_line():
    with _ChatServer(fail_first=False, status=400) as server:
        cap = HTTPCaptioner(server.url, "m", prompt="p", retries=3, backoff_s=0.01)
        with pytest.raises(HTTPCaptionError, match="HTTP 400"):
            cap.caption([_frames(1, 0)])
    assert len(server.requests) == 1


def test_http_unreachable_server_gives_up_after_retries():
    with _ChatServer() as server:
        url = server.url
    cap = HTTPCaptioner(url, "m", prompt="p", retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(HTTPCaptionError, match="gave up after 2 tries"):
        cap.caption([_frames(1, 0)])


# --- CLIP embeddings and aesthetics ------------------------------------------------------------------------

def test_clip_embeddings_match_the_model_and_do_not_depend_on_batching(tiny):
    from transformers import CLIPModel

    frames = _frames(5, 7)
    enc = ClipEncoder(tiny["clip"], batch_size=2).load()
    got = enc.frame_embeddings(frames)
    assert got.shape == (5, 16)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(5))
    model = CLIPModel.from_pretrained(tiny["clip"]).double().eval()
    pixels = enc.processor(images=frames, return_tensors="pt")["pixel_values"].double()
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=pixels)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).float()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    emb = clip_embedding(got)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(ref.mean(0), dim=-1), atol=1e-5, rtol=1e-4)


def test_aesthetic_head_from_safetensors(tiny, tmp_path):
    head = AestheticHead.load(tiny["head"])
    w = load_file(tiny["head"])
    x = torch.nn.functional.normalize(torch.randn(4, 16, dtype=torch.float64), dim=-1)
    ref = torch.relu(x @ w["layers.0.weight"].double().T + w["layers.0.bias"].double())
    ref = (ref @ w["layers.1.weight"].double().T + w["layers.1.bias"].double()).squeeze(-1)
    torch.testing.assert_close(head(x.float()).double(), ref, atol=1e-5, rtol=1e-5)
    assert reduce_scores(torch.tensor([3.0, 1.0, 5.0]), "mean") == pytest.approx(3.0)
    assert reduce_scores(torch.tensor([3.0, 1.0, 5.0]), "min") == pytest.approx(1.0)
    # LAION-style keys (gaps where dropout layers sit) and a linear head load too
    laion = {"layers.0.weight": torch.randn(8, 16), "layers.0.bias": torch.zeros(8),
             "layers.3.weight": torch.randn(1, 8), "layers.3.bias": torch.zeros(1)}
    save_file(laion, str(tmp_path / "laion.safetensors"))
    assert len(AestheticHead.load(str(tmp_path / "laion.safetensors")).net) == 3
    save_file({"weight": torch.randn(1, 16), "bias": torch.zeros(1)}, str(tmp_path / "lin.safetensors"))
    assert AestheticHead.load(str(tmp_path / "lin.safetensors")).in_dim == 16
    save_file({"layers.0.weight": torch.randn(8, 16), "layers.1.weight": torch.randn(1, 7)},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(CurateError, match="does not chain"):
        AestheticHead.load(str(tmp_path / "bad.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CurateError):
        AestheticHead.load(str(tmp_path / "junk.safetensors"))
