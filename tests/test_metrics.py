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


# --------------------------------------------------------------------------- hierarchy-aware metrics
import itertools
import math

from h2arn.evaluate import (average_precision, ceiling_recall, chance_average_precision, chance_recall,
                            hierarchy_metrics, ndcg_at_k, relevance_tensors)

ARM = ["furniture", "seat", "chair", "armchair"]
DESK = ["furniture", "table", "table", "desk"]


def _m(shape, level, path, attrs, node, named=None, group=0, inst=False):
    """One caption's benchmark-v4 meta: what it names (node, named attributes, or the instance)."""
    target = {"level": level, "node": node, "named": named or {}, **({"shape": shape} if inst else {})}
    return {"caption": f"{shape} {level}", "shape": shape, "subset": "Elephant", "level": level,
            "taxonomy_path": path, "attributes": attrs, "target": target, "caption_group": group}


# 3 clouds: c0 red armchair, c1 blue armchair, c2 blue desk
META = [_m("a0", 0, ARM, {"color": "red"}, ARM[:1], group=1),                    # "furniture": all three
        _m("a0", 1, ARM, {"color": "red"}, ARM[:2], group=2),                    # "a seat": both armchairs
        _m("a1", 4, ARM, {"color": "blue"}, ARM, {"color": "blue"}, group=3),    # "a blue armchair": c1 only
        _m("d0", 5, DESK, {"color": "blue"}, DESK, group=4, inst=True),          # instance caption ...
        _m("a0", 5, ARM, {"color": "red"}, ARM, group=4, inst=True),             # ... with the same text as d0's
        _m("d0", 2, DESK, {"color": "blue"}, DESK[:3], group=5)]                 # "a table"
META_TO_PC = torch.tensor([0, 0, 1, 2, 0, 2])


def test_relevance_tensors_follow_the_targets_and_identical_captions():
    rel, grades = relevance_tensors(META, META_TO_PC, 3)
    assert rel.int().tolist() == [[1, 1, 1], [1, 1, 0], [0, 1, 0], [1, 0, 1], [1, 0, 1], [0, 0, 1]]
    assert grades.shape == (6, 3) and bool((grades[rel] > 0).all())
    with pytest.raises(ValueError, match="every cloud needs"):
        relevance_tensors(META, META_TO_PC, 4)


def test_average_precision_and_ndcg_by_hand():
    # relevant items c0, c1, c2; ranking c0 (rel), c3, c2 (rel), c1 (rel): AP = (1 + 2/3 + 3/4) / 3
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.8]])
    ap = average_precision(scores, torch.tensor([[True, True, True, False]]))
    assert float(ap) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # gains [2, 2, 1, 0]; ranking c1 (2), c3 (0), c0 (2), c2 (1): DCG = 2 + 0 + 2/log2(4) + 1/log2(5)
    nd = ndcg_at_k(torch.tensor([[0.2, 0.9, 0.1, 0.5]]), torch.tensor([[2.0, 2.0, 1.0, 0.0]]))
    dcg = 2 + 2 / 2 + 1 / math.log2(5)
    ideal = 2 + 2 / math.log2(3) + 1 / 2
    assert float(nd) == pytest.approx(dcg / ideal)
    assert torch.isnan(average_precision(scores, torch.zeros(1, 4, dtype=torch.bool))).all()


def test_chance_average_precision_matches_enumeration():
    for n, r in ((4, 1), (4, 2), (5, 3), (6, 6)):
        aps = []
        for perm in itertools.permutations(range(n)):
            scores = torch.tensor([[float(-p) for p in perm]])
            rel = torch.tensor([[i < r for i in range(n)]])
            aps.append(float(average_precision(scores, rel)))
        assert float(chance_average_precision(torch.tensor([r]), n)) == pytest.approx(sum(aps) / len(aps))


def test_chance_and_ceiling_recall_by_hand():
    assert float(chance_recall(10, torch.tensor([1.0]), 1)) == pytest.approx(0.1)
    assert float(chance_recall(5, torch.tensor([2.0]), 2)) == pytest.approx(1 - 3 / 10)    # 1 - C(3,2)/C(5,2)
    assert float(ceiling_recall(torch.tensor([4.0]), torch.tensor([1.0]), 1)) == pytest.approx(0.25)
    assert float(ceiling_recall(torch.tensor([4.0]), torch.tensor([1.0]), 5)) == pytest.approx(1.0)


def test_hierarchy_metrics_perfect_model_reaches_ceilings():
    rel, grades = relevance_tensors(META, META_TO_PC, 3)
    # relevant first, by grade among them, own cloud first: an ideal ranking for every metric at once
    sim = 10 * rel.float() + grades + 0.01 * torch.nn.functional.one_hot(META_TO_PC, 3)
    m = hierarchy_metrics(sim, META_TO_PC, META, per_query=True)
    assert m["t2p_hmAP"] == pytest.approx(100.0)
    by_grade = hierarchy_metrics(grades + 0.01 * torch.nn.functional.one_hot(META_TO_PC, 3), META_TO_PC, META)
    assert by_grade["t2p_nDCG@10"] == pytest.approx(100.0)            # the ideal nDCG ranking is by grade
    # level 0: 3 clouds satisfy "furniture" -> instance R@1 ceiling 1/3, and this model is at 100 (own cloud first)
    assert m["L0_ceiling_t2p_R@1"] == pytest.approx(100 / 3) and m["L0_relevant_mean"] == 3.0
    # instance captions: two relevant clouds each (identical text) -> ceiling 1/2
    assert m["L5_ceiling_t2p_R@1"] == pytest.approx(50.0) and m["L5_t2p_R@1"] == pytest.approx(100.0)
    assert m["chance_t2p_R@1"] == pytest.approx(100 / 3) and m["chance_t2p_R@5"] == pytest.approx(100.0)
    assert len(m["per_query"]["t2p_ap"]) == 6 and m["levels"] == [0, 1, 2, 4, 5]


def test_hierarchy_metrics_chance_matches_random_scores():
    """The exact chance levels equal the Monte-Carlo mean over random score matrices (20,000 draws)."""
    rel, grades = relevance_tensors(META, META_TO_PC, 3)
    m = hierarchy_metrics(torch.rand(6, 3), META_TO_PC, META)
    g = torch.Generator().manual_seed(0)
    draws = 20000
    scores = torch.rand(draws * 6, 3, generator=g)
    ap = average_precision(scores, rel.repeat(draws, 1)).mean()
    nd = ndcg_at_k(scores, grades.repeat(draws, 1)).mean()
    assert 100 * float(ap) == pytest.approx(m["chance_t2p_hmAP"], abs=0.5)
    assert 100 * float(nd) == pytest.approx(m["chance_t2p_nDCG@10"], abs=0.5)
    scores_p = torch.rand(draws * 3, 6, generator=g)
    ap_p = average_precision(scores_p, rel.t().repeat(draws, 1)).mean()
    assert 100 * float(ap_p) == pytest.approx(m["chance_p2t_hmAP"], abs=0.5)


def test_recall_only_without_caption_targets():
    meta = [{"caption": "x", "level": 0}] * 2
    from h2arn.evaluate import evaluate_similarity

    m = evaluate_similarity(torch.eye(2), torch.tensor([0, 1]), meta)
    assert m["rsum"] == pytest.approx(600.0) and "t2p_hmAP" not in m
