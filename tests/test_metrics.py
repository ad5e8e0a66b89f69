"""Retrieval metrics on hand-made similarity matrices, and one-pass block similarity."""
from __future__ import annotations

import pytest
import torch

from h2arn.evaluate import (ranks_cloud_to_text, ranks_text_to_cloud, retrieval_metrics,
                           similarity_in_blocks)
from h2arn.model import H2ARN, ModelConfig

# 5 captions (rows) x 3 clouds (columns); captions 0,1 -> cloud 0, caption 2 -> cloud 1, captions 3,4 -> cloud 2
SIM = torch.tensor([
    [0.9, 0.1, 0.2],    # t0 -> c0: nothing higher than 0.9                 rank 1
    [0.3, 0.5, 0.4],    # t1 -> c0: 0.5, 0.4 higher                          rank 3
    [0.6, 0.6, 0.1],    # t2 -> c1: 0.6 ties with the target (favours it)    rank 1
    [0.2, 0.8, 0.7],    # t3 -> c2: 0.8 higher                               rank 2
    [0.1, 0.2, 0.05],   # t4 -> c2: 0.1, 0.2 higher                          rank 3
])
TXT_TO_PC = torch.tensor([0, 0, 1, 2, 2])
# 3D->text, best over the cloud's captions:
#   c0 column (0.9, 0.3, 0.6, 0.2, 0.1), own best 0.9 -> rank 1
#   c1 column (0.1, 0.5, 0.6, 0.8, 0.2), own best 0.6 -> 0.8 higher -> rank 2
#   c2 column (0.2, 0.4, 0.1, 0.7, 0.05), own best 0.7 (t3; t4 alone would rank 5) -> rank 1


def test_ranks_by_hand():
    assert ranks_text_to_cloud(SIM, TXT_TO_PC).tolist() == [1, 3, 1, 2, 3]
    ranks, has = ranks_cloud_to_text(SIM, TXT_TO_PC)
    assert ranks.tolist() == [1, 2, 1] and has.all()


def test_metrics_by_hand():
    m = retrieval_metrics(SIM, TXT_TO_PC)
    assert m["t2p_R@1"] == pytest.approx(40.0)
    assert m["t2p_R@5"] == pytest.approx(100.0) and m["t2p_R@10"] == pytest.approx(100.0)
    assert m["t2p_mean_rank"] == pytest.approx(2.0)
    assert m["t2p_mrr"] == pytest.approx((1 + 1 / 3 + 1 + 1 / 2 + 1 / 3) / 5)
    assert m["p2t_R@1"] == pytest.approx(200 / 3)
    assert m["p2t_mean_rank"] == pytest.approx(4 / 3)
    assert m["p2t_mrr"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["rsum"] == pytest.approx(40 + 100 + 100 + 200 / 3 + 100 + 100)
    assert m["n_txt"] == 5 and m["n_pc"] == 3


def test_recall_at_5_and_10_boundaries():
    # one caption, 12 clouds, exactly 6 clouds score above the target: rank 7
    sim = torch.zeros(1, 12)
    sim[0, :6] = 1.0
    sim[0, 6] = 0.5
    m = retrieval_metrics(sim, torch.tensor([6]))
    assert m["t2p_R@1"] == 0.0 and m["t2p_R@5"] == 0.0 and m["t2p_R@10"] == 100.0
    assert m["t2p_mean_rank"] == 7.0


def test_all_ties_count_for_the_target():
    m = retrieval_metrics(torch.zeros(4, 3), torch.tensor([0, 1, 2, 2]))
    assert m["t2p_R@1"] == 100.0 and m["p2t_R@1"] == 100.0


def test_clouds_without_captions_are_left_out():
    sim = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]])
    m = retrieval_metrics(sim, torch.tensor([0, 1]))
    assert m["n_pc"] == 2
    assert m["p2t_R@1"] == 100.0          # cloud 2 has no caption: not counted as a miss
    assert m["t2p_R@1"] == 0.0             # but it still competes as a distractor


def _reference_loops(sim: torch.Tensor, txt_to_pc: torch.Tensor):
    """Plain-Python version of the official recall.py protocol."""
    n_txt, n_pc = sim.shape
    t2p = []
    for t in range(n_txt):
        target = sim[t, txt_to_pc[t]].item()
        t2p.append(1 + sum(1 for q in range(n_pc) if sim[t, q].item() > target))
    p2t = []
    for p in range(n_pc):
        caps = [t for t in range(n_txt) if txt_to_pc[t].item() == p]
        if not caps:
            continue
        p2t.append(min(1 + sum(1 for u in range(n_txt) if sim[u, p].item() > sim[t, p].item()) for t in caps))
    return t2p, p2t


def test_matches_a_loop_reference_with_many_ties():
    g = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 4, (30, 9), generator=g).float()     # coarse values: many ties
    txt_to_pc = torch.randint(0, 9, (30,), generator=g)
    t2p_ref, p2t_ref = _reference_loops(sim, txt_to_pc)
    assert ranks_text_to_cloud(sim, txt_to_pc).tolist() == t2p_ref
    ranks, has = ranks_cloud_to_text(sim, txt_to_pc)
    assert ranks[has].tolist() == p2t_ref
    m = retrieval_metrics(sim, txt_to_pc)
    assert m["p2t_R@5"] == pytest.approx(100 * sum(r <= 5 for r in p2t_ref) / len(p2t_ref))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one cloud index per caption"):
        retrieval_metrics(torch.zeros(2, 2), torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("geometry", ["hyperbolic", "euclidean"])
def test_similarity_in_blocks_equals_direct_encoding(geometry):
    torch.manual_seed(0)
    model = H2ARN(ModelConfig(d_txt=8, d_pcd=6, d_model=8, nhead=2, num_layers=1, dropout=0.3,
                              geometry=geometry))
    txt, pc = torch.randn(11, 4, 8), torch.randn(7, 5, 6)
    txt_mask = torch.rand(11, 4) > 0.3
    txt_mask[:, 0] = True
    pc_mask = torch.ones(7, 5, dtype=torch.bool)
    model.train()
    s_small = similarity_in_blocks(model, txt, txt_mask, pc, pc_mask, batch_size=3)
    assert model.training                                        # mode restored
    s_big = similarity_in_blocks(model, txt, txt_mask, pc, pc_mask, batch_size=100)
    model.eval()
    with torch.no_grad():
        direct = model.similarity(model.encode_text(txt, txt_mask), model.encode_cloud(pc, pc_mask))
    assert s_small.shape == (11, 7)
    assert torch.allclose(s_small, direct, atol=1e-5) and torch.allclose(s_big, direct, atol=1e-5)
