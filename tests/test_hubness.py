"""Hubness and chance-recall helpers of h2arn.evaluate, on cases small enough to compute by hand."""
from __future__ import annotations

import math

import pytest
import torch

from h2arn.evaluate import chance_recalls, hubness


def test_hubness_by_hand():
    # 4 queries x 3 items, k = 1: the top item of each row is 0, 0, 0, 1 -> N_1 = (3, 1, 0)
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.7, 0.2, 0.3], [0.1, 0.9, 0.2]])
    h = hubness(sim, k=1, top_fraction=0.05)
    # mean 4/3, centred (5/3, -1/3, -4/3): variance 14/9, third moment 20/27 -> skewness 20 / 14^1.5
    assert h["skewness"] == pytest.approx(20 / 14 ** 1.5)
    assert h["n_top_items"] == 1 and h["top_share"] == pytest.approx(3 / 4)   # item 0 fills 3 of 4 slots
    assert h["uniform_top_share"] == pytest.approx(1 / 3)
    assert h["max_occurrence"] == 3 and h["max_occurrence_share"] == pytest.approx(0.75)
    assert h["never_share"] == pytest.approx(1 / 3)                           # item 2 is never retrieved


def test_even_lists_have_no_hubness():
    # each of 3 items is the top-1 of exactly one query: N_1 = (1, 1, 1)
    h = hubness(torch.eye(3), k=1)
    assert h["skewness"] == 0.0 and h["top_share"] == pytest.approx(h["uniform_top_share"])
    assert h["never_share"] == 0.0


def test_k_larger_than_the_gallery_is_capped():
    assert hubness(torch.rand(5, 3), k=10)["k"] == 3


def test_chance_recalls_by_hand():
    # 2 clouds; captions 0, 1, 2 describe cloud 0 and caption 3 cloud 1
    ch = chance_recalls(torch.tensor([0, 0, 0, 1]), num_clouds=2)
    assert ch["t2p_R@1"] == pytest.approx(50.0)                 # one target among 2 clouds
    assert ch["t2p_R@5"] == ch["t2p_R@10"] == pytest.approx(100.0)
    # 3D->text R@1: cloud 0 owns 3 of 4 captions (3/4), cloud 1 owns 1 (1/4): mean 1/2
    assert ch["p2t_R@1"] == pytest.approx(50.0)
    assert ch["rsum"] == pytest.approx(500.0)
    assert not math.isnan(ch["p2t_R@10"])
