"""The RISD oracle of the redundancy study: the same features with the flagged cloud tokens masked out."""
from __future__ import annotations

import json

import torch

from h2arn.course.study_data import ORACLE_THRESHOLD, oracle_features
from h2arn.data.redundancy import token_redundancy_path
from h2arn.extract import link_paths
from h2arn.features import load_feature_splits, write_split


def _packed_features(root):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        pc = torch.randn(4, 5, 3, generator=g)
        pc_mask = torch.ones(4, 5, dtype=torch.bool)
        pc_mask[0, -1] = False
        write_split(root, "Elephant", split, txt=torch.randn(4, 2, 6, generator=g),
                    txt_mask=torch.ones(4, 2, dtype=torch.bool), pc=pc, pc_mask=pc_mask,
                    links=[(i, i) for i in range(4)], txt_model="MiniLM", pc_model="PointNet", packed=True)
        shares = torch.zeros(4, 5)
        shares[1, :2] = 0.9          # cloud 1: two flagged tokens
        shares[2, :] = 1.0           # cloud 2: only flagged tokens (keeps them: a cloud is never empty)
        shares[3, 4] = ORACLE_THRESHOLD   # exactly at the threshold: kept
        torch.save(shares, token_redundancy_path(root, "Elephant", split, "PointNet"))
    (root / "manifest.json").write_text(json.dumps({"entries": {}}))
    return root


def test_oracle_masks_flagged_tokens_and_keeps_the_rest(tmp_path):
    feats = _packed_features(tmp_path / "h2synth-ci")
    out = oracle_features(feats)
    before = load_feature_splits(link_paths(feats, "train"))
    after = load_feature_splits(link_paths(out, "train"))   # loads: mask and packed file agree
    assert after.pc_mask.sum(1).tolist() == [4, 3, 5, 5]
    assert not after.pc_mask[1, :2].any() and after.pc_mask[1, 2:].all()
    kept = after.pc_mask
    assert torch.allclose(after.pc[kept], before.pc[:, :kept.shape[1]][kept], atol=1e-2)
    assert torch.equal(after.txt, before.txt)
    assert oracle_features(feats) == out   # cached
