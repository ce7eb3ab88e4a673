"""TextEncoder: a tiny random T5 with the byte-level ByT5 tokenizer, saved and reloaded."""

from __future__ import annotations

import pytest
import torch

from diffusion.text_encoder import TextEncoder, TextEncoderConfig, create_tiny_text_encoder

PROMPTS = ["a red ball rolls", "waves on a beach at sunset, slow pan", ""]


@pytest.fixture(scope="module")
def te_dir(tmp_path_factory):
    return create_tiny_text_encoder(str(tmp_path_factory.mktemp("tiny_t5")), dim=32, max_length=24)


def test_embeddings_and_mask(te_dir):
    enc = TextEncoder.from_pretrained(te_dir)
    emb, mask = enc.encode(PROMPTS)
    assert emb.shape == (3, 24, 32) and mask.shape == (3, 24) and mask.dtype == torch.bool
    # byte-level tokens + one end-of-sequence token; the long prompt is truncated to max_length
    assert mask.sum(1).tolist() == [len(PROMPTS[0]) + 1, 24, 1]
    assert mask[0, : len(PROMPTS[0]) + 1].all() and not mask[0, len(PROMPTS[0]) + 1:].any()
    assert emb[~mask].abs().max() == 0  # padding is zero (Wan's convention)
    assert emb[mask].abs().mean() > 0.01
    assert (emb[0] - emb[1]).abs().max() > 1e-3


def test_reload_gives_the_same_embeddings(te_dir, tmp_path):
    enc = TextEncoder.from_pretrained(te_dir)
    emb, mask = enc.encode(PROMPTS)
    enc.save(str(tmp_path / "copy"))
    again = TextEncoder.from_pretrained(str(tmp_path / "copy"))
    emb2, mask2 = again.encode(PROMPTS)
    assert torch.equal(emb, emb2) and torch.equal(mask, mask2)
    # batching does not change a prompt's embedding
    single, _ = again.encode(PROMPTS[0])
    assert torch.allclose(single[0], emb[0], atol=1e-5)
    assert not any(p.requires_grad for p in again.model.parameters())


def test_seed_decides_the_random_encoder(tmp_path):
    a = TextEncoder.from_pretrained(create_tiny_text_encoder(str(tmp_path / "a"), dim=32, seed=1))
    b = TextEncoder.from_pretrained(create_tiny_text_encoder(str(tmp_path / "b"), dim=32, seed=2))
    assert (a.encode("x")[0] - b.encode("x")[0]).abs().max() > 1e-3


def test_config_checks(te_dir):
    with pytest.raises(ValueError, match="does not match"):
        TextEncoder.from_pretrained(te_dir, TextEncoderConfig(kind="t5", max_length=8, dim=64))
    with pytest.raises(ValueError, match="kind"):
        TextEncoderConfig(kind="clip")
    with pytest.raises(FileNotFoundError):
        TextEncoder.from_pretrained("/nonexistent/te")


def test_word_level_vocabulary_saves_and_reloads(tmp_path):
    """text.vocab: one token per word (case folded, punctuation split off), unknown words share one
    token, `</s>` closes the prompt; the run folder reloads the same tokenizer and embeddings."""
    words = "a red blue circle moves to the left".split()
    d = create_tiny_text_encoder(str(tmp_path / "words"), dim=32, max_length=12, vocab=words)
    enc = TextEncoder.from_pretrained(d)
    assert enc.config.vocab == words
    ids = enc.tokenizer(["a Red circle moves to the left.", "a purple circle"]).input_ids
    unk, eos = enc.tokenizer.unk_token_id, enc.tokenizer.eos_token_id
    assert len(ids[0]) == 9 and ids[0][-1] == eos and unk in ids[0]  # "." is a word of its own, unknown
    assert ids[1][1] == unk and ids[1][0] == ids[0][0] and ids[1][2] == ids[0][2]
    emb, mask = enc.encode(["a red circle", "a blue circle"])
    assert mask.sum(1).tolist() == [4, 4]
    assert (emb[0, 1] - emb[1, 1]).abs().max() > 1e-3  # the colour words differ
    again, _ = TextEncoder.from_pretrained(d).encode(["a red circle", "a blue circle"])
    torch.testing.assert_close(again, emb, rtol=0, atol=0)
    with pytest.raises(ValueError, match="vocab"):
        TextEncoderConfig(vocab=["two words"])
