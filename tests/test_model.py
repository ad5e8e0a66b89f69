"""H2ARN model: shapes, manifold, masking, gradients, constrained scalars, parameter groups, precision."""
from __future__ import annotations

import math

import pytest
import torch

from h2arn import lorentz as L
from h2arn.losses import H2ARNLoss
from h2arn.model import H2ARN, LossConfig, ModelConfig

D_TXT, D_PCD, D_MODEL = 12, 10, 16


def make_model(**kw) -> H2ARN:
    torch.manual_seed(0)
    base = dict(d_txt=D_TXT, d_pcd=D_PCD, d_model=D_MODEL, nhead=4, num_layers=2, dropout=0.1)
    base.update(kw)
    return H2ARN(ModelConfig(**base))


def tokens(b: int, length: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, length, d, generator=torch.Generator().manual_seed(seed))


def full_mask(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool)


@pytest.mark.parametrize("lift", ["expmap", "official"])
@pytest.mark.parametrize("aggregation", ["contribution", "mean"])
def test_hyperbolic_embeddings_on_the_manifold(lift, aggregation):
    model = make_model(lift=lift, aggregation=aggregation).eval()
    txt, pc = tokens(4, 7, D_TXT), tokens(3, 5, D_PCD, 1)
    t, p = model(txt, full_mask(txt), pc, full_mask(pc))
    assert t.shape == (4, D_MODEL + 1) and p.shape == (3, D_MODEL + 1)
    assert t.dtype == torch.float32
    c = model.curvature()
    for e in (t, p):
        assert torch.allclose(c * L.inner(e, e), -torch.ones(e.shape[0]), atol=1e-5)
    assert model.config.embed_dim == D_MODEL + 1


def test_euclidean_embeddings_are_unit_vectors_and_similarity_is_cosine():
    model = make_model(geometry="euclidean").eval()
    txt, pc = tokens(4, 7, D_TXT), tokens(3, 5, D_PCD, 1)
    t, p = model(txt, full_mask(txt), pc, full_mask(pc))
    assert t.shape == (4, D_MODEL)
    assert torch.allclose(t.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(model.similarity(t, p), t @ p.t(), atol=1e-6)
    assert not isinstance(model.log_c, torch.nn.Parameter)


@pytest.mark.parametrize("geometry,aggregation", [("hyperbolic", "contribution"), ("hyperbolic", "mean"),
                                                  ("euclidean", "contribution"), ("euclidean", "mean")])
def test_padding_changes_nothing(geometry, aggregation):
    model = make_model(geometry=geometry, aggregation=aggregation).eval()
    txt = tokens(3, 6, D_TXT)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    garbage = torch.full((3, 4, D_TXT), 1e3)
    garbage[:, 0] = float("nan")
    txt_pad = torch.cat([txt, garbage], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        e1 = model.encode_text(txt, mask)
        e2 = model.encode_text(txt_pad, mask_pad)
        # the values in already-padded positions of the ORIGINAL input do not matter either
        txt_other = txt.clone()
        txt_other[~mask] = 7.0
        e3 = model.encode_text(txt_other, mask)
    assert torch.allclose(e1, e2, atol=1e-5)
    assert torch.allclose(e1, e3, atol=1e-5)
    # ... while a valid token does matter (this test can fail)
    txt_changed = txt.clone()
    txt_changed[1, 0] += 1.0
    with torch.no_grad():
        e4 = model.encode_text(txt_changed, mask)
    assert not torch.allclose(e1[1], e4[1], atol=1e-4)
    assert torch.allclose(e1[0], e4[0], atol=1e-6)


def test_padding_changes_nothing_on_the_autograd_path():
    # train mode without dropout and with gradients: the slow (non-fused) attention path
    model = make_model(dropout=0.0).train()
    pc = tokens(2, 5, D_PCD)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    pc_pad = torch.cat([pc, torch.full((2, 3, D_PCD), float("nan"))], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    e1 = model.encode_cloud(pc, mask)
    e2 = model.encode_cloud(pc_pad, mask_pad)
    assert torch.allclose(e1, e2, atol=1e-5)
    e2.sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)


def test_official_no_mask_mode_lets_padding_in():
    model = make_model(mask_padding=False).eval()
    txt = tokens(2, 5, D_TXT)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 3:] = False
    with torch.no_grad():
        e_full = model.encode_text(txt, torch.ones(2, 5, dtype=torch.bool))
        e_masked_ignored = model.encode_text(txt, mask)
        e_short = model.encode_text(txt[:, :3], mask[:, :3])
    assert torch.allclose(e_full, e_masked_ignored)                # the mask is ignored, as officially
    assert not torch.allclose(e_full, e_short, atol=1e-4)          # so padding tokens change the embedding


def test_sample_without_valid_token_is_one_clear_error():
    model = make_model()
    txt = tokens(2, 3, D_TXT)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match=r"samples \[1\].*no valid token"):
        model.encode_text(txt, mask)


def test_contributions_are_a_distribution_over_valid_tokens():
    model = make_model().eval()
    pc = tokens(2, 9, D_PCD)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        w = model.contributions(pc, mask, "cloud")
    assert w.shape == (2, 9)
    assert torch.allclose(w.sum(-1), torch.ones(2), atol=1e-6)
    assert (w[1, 5:] == 0).all() and (w[mask] > 0).all()


@pytest.mark.parametrize("lift", ["expmap", "official"])
def test_gradients_finite_with_one_valid_token(lift):
    model = make_model(lift=lift).train()
    txt, pc = tokens(4, 5, D_TXT), tokens(4, 6, D_PCD, 1)
    txt_mask = torch.zeros(4, 5, dtype=torch.bool)
    txt_mask[:, 0] = True                                       # one valid token: token == anchor
    pc_mask = full_mask(pc)
    pc_mask[2, 1:] = False
    t, p = model(txt, txt_mask, pc, pc_mask)
    loss, logs = H2ARNLoss(LossConfig())(model, t, p, torch.tensor([0, 1, 1, 2]))
    assert math.isfinite(loss.item())
    loss.backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None, name
        assert torch.isfinite(prm.grad).all(), name
    assert model.log_alpha_txt.grad.abs() > 0 and model.txt_agg.log_temp.grad is not None


def test_curvature_stays_in_bounds_and_keeps_a_gradient_at_the_bound():
    model = make_model(curv_min=0.1, curv_max=10.0)
    with torch.no_grad():
        model.log_c.fill_(math.log(50.0))                       # raw value past the upper bound
    assert model.curvature().item() == pytest.approx(10.0)
    model.curvature().backward()
    assert model.log_c.grad.item() > 0                          # straight-through: not frozen at the bound
    opt = torch.optim.SGD([model.log_c], lr=100.0)
    model.log_c.grad.neg_()                                     # a step pushing c further UP
    opt.step()
    assert model.curvature().item() <= 10.0 + 1e-5
    model.project_parameters_()
    assert math.log(0.1) - 1e-6 <= model.log_c.item() <= math.log(10.0) + 1e-6
    with torch.no_grad():
        model.log_c.fill_(-30.0)
    assert model.curvature().item() == pytest.approx(0.1)


def test_alpha_at_most_one_and_initialised_at_inverse_sqrt_d():
    model = make_model()
    assert model.alpha("text").item() == pytest.approx(1 / math.sqrt(D_MODEL), rel=1e-6)
    with torch.no_grad():
        model.log_alpha_pcd.fill_(3.0)
    assert model.alpha("cloud").item() == pytest.approx(1.0)
    s = model.scalars()
    assert s["alpha_pcd"] == pytest.approx(1.0) and s["temp_txt"] == pytest.approx(0.07)
    assert s["curvature"] == pytest.approx(1.0) and s["curvature_at_bound"] == 0.0


def test_every_parameter_gets_a_gradient_in_each_variant():
    for kw in (dict(), dict(aggregation="mean"), dict(lift="official"), dict(learn_curvature=False),
               dict(geometry="euclidean")):
        model = make_model(dropout=0.0, **kw)
        txt, pc = tokens(4, 5, D_TXT), tokens(4, 6, D_PCD, 1)
        t, p = model(txt, full_mask(txt), pc, full_mask(pc))
        H2ARNLoss(LossConfig())(model, t, p, torch.arange(4))[0].backward()
        missing = [n for n, prm in model.named_parameters() if prm.grad is None]
        assert not missing, (kw, missing)


def test_fixed_curvature_ablation():
    model = make_model(learn_curvature=False, curv_init=2.0)
    assert "log_c" not in dict(model.named_parameters())
    assert "log_c" in model.state_dict()
    assert model.curvature().item() == pytest.approx(2.0)


def test_param_groups_exclude_scalars_biases_and_norms():
    model = make_model(d_txt=D_MODEL + 3)                       # input projection present for text
    groups = model.param_groups(0.05)
    decay_ids = {id(p) for p in groups[0]["params"]}
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    named = dict(model.named_parameters())
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay_ids.isdisjoint(no_decay_ids)
    assert decay_ids | no_decay_ids == {id(p) for p in model.parameters()}
    for name in ("log_c", "log_alpha_txt", "log_alpha_pcd", "txt_agg.log_temp", "pcd_agg.log_temp"):
        assert id(named[name]) in no_decay_ids, name
    for name, p in named.items():
        if name.endswith("bias") or "norm" in name:
            assert id(p) in no_decay_ids, name
    assert id(named["txt_encoder.input_proj.weight"]) in decay_ids
    assert id(named["txt_encoder.layers.0.linear1.weight"]) in decay_ids


def test_input_projection_only_when_widths_differ():
    model = make_model(d_txt=D_MODEL, d_pcd=D_PCD)
    assert isinstance(model.txt_encoder.input_proj, torch.nn.Identity)
    assert isinstance(model.pcd_encoder.input_proj, torch.nn.Linear)
    layer = model.txt_encoder.layers[0]
    assert layer.norm_first and layer.self_attn.batch_first and layer.linear1.out_features == 4 * D_MODEL


def test_similarity_ranks_like_the_lorentz_inner_product():
    model = make_model().eval()
    txt, pc = tokens(6, 4, D_TXT), tokens(8, 4, D_PCD, 1)
    with torch.no_grad():
        t, p = model(txt, full_mask(txt), pc, full_mask(pc))
        sim = model.similarity(t, p)
    assert torch.allclose(sim, -L.pairwise_dist(t, p, model.curvature()))
    assert torch.equal(sim.argsort(dim=1), L.pairwise_inner(t, p).argsort(dim=1))
    assert torch.allclose(torch.diagonal(model.similarity(t, t)), torch.zeros(6), atol=2e-3)


def test_geometry_is_float32_under_autocast():
    model = make_model().eval()
    txt = tokens(3, 4, D_TXT)
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        e = model.encode_text(txt, full_mask(txt))
        s = model.similarity(e, e)
    assert e.dtype == torch.float32 and s.dtype == torch.float32
    assert torch.allclose(model.curvature() * L.inner(e, e), -torch.ones(3), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_geometry_is_float32_under_cuda_half_autocast():
    model = make_model().cuda().train()
    txt = tokens(3, 4, D_TXT).cuda()
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        t, p = model(txt, full_mask(txt).cuda(), tokens(3, 5, D_PCD).cuda(), torch.ones(3, 5, dtype=torch.bool).cuda())
        loss, _ = H2ARNLoss(LossConfig())(model, t, p, torch.arange(3).cuda())
    assert t.dtype == torch.float32 and loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = make_model(dropout=0.5)
    txt = tokens(2, 5, D_TXT)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_text(txt, full_mask(txt)), model.encode_text(txt, full_mask(txt)))
    model.train()
    torch.manual_seed(1)
    a = model.encode_text(txt, full_mask(txt))
    b = model.encode_text(txt, full_mask(txt))
    assert not torch.allclose(a, b)


def test_config_roundtrip_and_validation():
    cfg = ModelConfig(d_model=32, nhead=8, lift="official", aggregation="mean", dim_feedforward=64)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.ffn_dim == 64 and ModelConfig().ffn_dim == 2048
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, nhead=4)
    with pytest.raises(ValueError):
        ModelConfig(geometry="spherical")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"d_model": 32, "heads": 4})


def test_wrong_feature_width_is_one_clear_error():
    model = make_model()
    bad = tokens(2, 3, D_TXT + 1)
    with pytest.raises(ValueError, match=r"d_txt=13"):
        model.encode_text(bad, full_mask(bad))
    with pytest.raises(ValueError, match="mask"):
        model.encode_text(tokens(2, 3, D_TXT), torch.ones(2, 4, dtype=torch.bool))


def test_a_few_steps_reduce_the_loss():
    model = make_model(dropout=0.0, num_layers=1)
    txt, pc = tokens(8, 4, D_TXT), tokens(8, 4, D_PCD, 1)
    pc_idx = torch.arange(8)
    crit = H2ARNLoss(LossConfig())
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
    losses = []
    for _ in range(10):
        t, p = model(txt, full_mask(txt), pc, full_mask(pc))
        loss, _ = crit(model, t, p, pc_idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project_parameters_()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sdpa_layer_path_matches_the_transformer_layer():
    """h2arn.attention: same outputs and gradients as nn.TransformerEncoderLayer with the padding mask."""
    from h2arn.attention import encoder_layer_forward

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)
    x = torch.randn(3, 6, 16, requires_grad=True)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 1:] = False
    for mask in (valid, None):
        ref = layer(x, src_key_padding_mask=None if mask is None else ~mask)
        out = encoder_layer_forward(layer, x, mask)
        keep = torch.ones(3, 6, dtype=torch.bool) if mask is None else mask
        assert torch.allclose(out[keep], ref[keep], atol=1e-5)
        g_ref = torch.autograd.grad(ref[keep].square().sum(), x)[0]
        g_out = torch.autograd.grad(out[keep].square().sum(), x)[0]
        assert torch.allclose(g_out, g_ref, atol=1e-5)
