"""Packed feature storage (issue 15, goal 3): valid tokens only, float16, zero bit map; read back through
the unchanged FeatureSplit API with the same retrieval metrics as the dense float32 files."""
from __future__ import annotations

import pytest
import torch

from h2arn import features as F
from h2arn.evaluate import evaluate_split
from h2arn.model import H2ARN, ModelConfig

from _fake_features import D_PCD, D_TXT, make_fake_features, link


def _tokens(n=7, length=9, dim=24, zeros=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, length, dim, generator=g) * 3
    if zeros:
        feats = feats * (torch.rand(n, length, dim, generator=g) > zeros)
    mask = torch.ones(n, length, dtype=torch.bool)
    for i in range(n):
        mask[i, 2 + i % (length - 3):] = False               # ragged lengths, never the full 9
    return feats, mask


@pytest.mark.parametrize("zeros", [0.0, 0.5])
def test_pack_round_trip_is_float16_of_the_valid_tokens(zeros):
    feats, mask = _tokens(zeros=zeros)
    packed = F.pack_tokens(feats, mask)
    assert ("nonzero_bits" in packed) == (zeros > 0) and packed["values"].dtype == torch.float16
    out, out_mask = F.unpack_tokens(packed)
    keep = int(mask.any(0).nonzero().max()) + 1
    assert out.shape == (7, keep, 24) and torch.equal(out_mask, mask[:, :keep])
    assert torch.equal(out[out_mask], feats[mask].half().float())      # exactly the float16 rounding
    assert not out[~out_mask].any()                                     # padding holds zeros


def test_values_beyond_float16_stay_float32():
    feats, mask = _tokens()
    feats[0, 0, 0] = 1e6
    packed = F.pack_tokens(feats, mask)
    assert packed["values"].dtype == torch.float32
    out, out_mask = F.unpack_tokens(packed)
    assert torch.equal(out[out_mask], feats[mask])


def test_packed_split_gives_the_same_metrics_and_is_smaller(tmp_path):
    dense = make_fake_features(tmp_path / "dense", n_clouds={"test": 40}, caps_per_cloud=3)
    split = F.load_links(link(dense, "test"))
    packed_root = tmp_path / "packed"
    links = list(zip(range(split.num_texts), split.txt_to_pc.tolist()))
    F.write_split(packed_root, "Elephant", "test", txt=split.txt, txt_mask=split.txt_mask, pc=split.pc,
                  pc_mask=split.pc_mask, links=links, txt_model="FAKE", pc_model="FAKEPC", meta=split.meta,
                  packed=True)
    packed = F.load_links(link(packed_root, "test"))
    assert packed.txt.shape[0] == split.num_texts and packed.txt.dtype == torch.float32
    assert torch.equal(packed.txt_to_pc, split.txt_to_pc) and packed.meta == split.meta
    torch.manual_seed(0)
    model = H2ARN(ModelConfig(d_txt=D_TXT, d_pcd=D_PCD, d_model=16, nhead=2, num_layers=1))
    a = evaluate_split(model, split, torch.device("cpu"))
    b = evaluate_split(model, packed, torch.device("cpu"))
    for key in ("t2p_R@1", "t2p_R@5", "p2t_R@1", "p2t_R@5", "rsum"):
        assert abs(a[key] - b[key]) <= 1e-6 + 100 / split.num_texts, (key, a[key], b[key])  # at most one rank flip
    for key in ("t2p_mrr", "p2t_mrr"):
        assert abs(a[key] - b[key]) < 0.01
    size = lambda root: sum(p.stat().st_size for p in (root / "Elephant" / "test").iterdir())   # noqa: E731
    assert size(packed_root) < 0.7 * size(dense)


def test_corrupt_packed_file_and_foreign_mask_are_named(tmp_path):
    feats, mask = _tokens()
    path = tmp_path / "txt_features_X.pt"
    bad = F.pack_tokens(feats, mask)
    bad["values"] = bad["values"][:-3]
    F.atomic_save(bad, path)
    with pytest.raises(F.FeatureError, match="txt_features_X.pt: corrupt packed"):
        F.read_tokens(path)
    F.atomic_save(F.pack_tokens(feats, mask), path)
    F.atomic_save(~mask, F.mask_path_for(path))
    with pytest.raises(F.FeatureError, match="txt_masks_X.pt: does not match"):
        F.read_tokens(path)


def test_fingerprint_ignores_a_re_save_of_the_same_packed_values(tmp_path):
    feats, mask = _tokens()
    path = tmp_path / "pc_features_X.pt"
    F.atomic_save(F.pack_tokens(feats, mask), path)
    first = F._file_digest(path)
    F._HASH_MEMO.clear()
    F.atomic_save(F.pack_tokens(feats.clone(), mask), path)
    assert F._file_digest(path) == first
    F._HASH_MEMO.clear()
    F.atomic_save(F.pack_tokens(feats + 1, mask), path)
    assert F._file_digest(path) != first
