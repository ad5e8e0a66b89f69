"""Per-token redundancy shares: they follow the encoder's own tokenisation exactly (the RISD oracle relies on it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from h2arn.data.redundancy import token_redundancy
from h2arn.data.synthetic import make_artefact
from h2arn.encoders.tokens import fps_downsample, pool_tokens


@pytest.mark.parametrize("pooling", ["spatial", "index"])
def test_token_shares_match_the_encoder_pooling(pooling):
    table, _, _ = make_artefact(7, "park bench", seed=0, n_points=700, redundancy=(0.3, 0.3))
    pts, flags = table[:, :6], table[:, 7]
    share = token_redundancy(pts, flags, num_points=512, num_tokens=40, pooling=pooling)
    # max-pool the flag itself through the encoder's pooling: a token is 1 iff a flagged point feeds it
    down = fps_downsample(torch.as_tensor(np.concatenate([pts, flags[:, None]], 1), dtype=torch.float32), 512)
    tok, mask = pool_tokens((down[None, :, 6:7] > 0).float(), down[None, :, :3], 40, pooling)
    any_flag = tok[0, :, 0].numpy() > 0
    valid = mask[0].numpy()
    assert np.array_equal(np.isfinite(share), valid)
    assert np.array_equal(share[valid] > 0, any_flag[valid])
    assert 0 < np.nanmean(share) < 1


def test_clean_cloud_has_no_redundant_tokens():
    table, _, _ = make_artefact(7, "mug", seed=0, n_points=300, redundancy=(0.0, 0.0))
    share = token_redundancy(table[:, :6], table[:, 7], num_points=256, num_tokens=16)
    assert np.nanmax(share) == 0.0


def test_extraction_writes_token_shares_in_cloud_order(tmp_path):
    import transformers

    from h2arn import extract as ex
    from h2arn.data import generate, load_split
    from h2arn.data.redundancy import token_redundancy_path
    from h2arn.encoders.text import minilm_path

    bert = tmp_path / "bert"
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=80)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(bert)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(bert)
    root = generate("ci", 0, tmp_path / "d", progress=False, leaves=1, train_per_leaf=1)
    ex.extract(root, "PointNet", "BERT", 256, output_dir=tmp_path / "f", txt_model_path=bert, pc_weights="random",
               num_tokens=8, batch_size=4, device="cpu", progress=False)
    for subset in ("Elephant", "S3DIS"):
        shares = torch.load(token_redundancy_path(tmp_path / "f", subset, "test", "PointNet"), weights_only=True)
        recs = load_split(root, subset, "test")
        assert shares.shape == (len(recs), 8)
        expected = token_redundancy(recs[1].points, recs[1].extra[:, 1], 256, 8)
        np.testing.assert_allclose(shares[1].numpy(), expected)
