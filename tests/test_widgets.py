"""Interactive-retrieval logic (h2arn.course.widgets) on a tiny in-memory session: no training, no real text model."""
from __future__ import annotations

import math
import zlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from h2arn import lorentz as L  # noqa: E402
from h2arn.course import widgets as W  # noqa: E402
from h2arn.encoders.tokens import fps_downsample, pool_tokens  # noqa: E402
from h2arn.model import H2ARN, ModelConfig  # noqa: E402

D_TXT, D_PCD, L_TXT, L_PCD, N_PC = 8, 6, 5, 12, 7


def _fake_encoder(captions):
    """Deterministic 'text encoder': each word becomes a seeded random token; mask marks the words."""
    tokens = torch.zeros(len(captions), L_TXT, D_TXT)
    mask = torch.zeros(len(captions), L_TXT, dtype=torch.bool)
    for i, cap in enumerate(captions):
        for j, word in enumerate(cap.split()[:L_TXT]):
            g = torch.Generator().manual_seed(zlib.crc32(word.encode()))
            tokens[i, j] = torch.randn(D_TXT, generator=g)
            mask[i, j] = True
    return tokens, mask


@pytest.fixture(scope="module")
def session():
    torch.manual_seed(0)
    model = H2ARN(ModelConfig(d_txt=D_TXT, d_pcd=D_PCD, d_model=8, nhead=2, num_layers=1, curv_init=0.7)).eval()
    rng = np.random.default_rng(0)
    points = [np.concatenate([rng.normal(size=(60, 3)), rng.uniform(size=(60, 3))], 1).astype(np.float32)
              for _ in range(N_PC)]
    # tokens as extraction makes them (spatial pooling of per-point features), so token_assignment can be checked
    feats = torch.randn(N_PC, 60, D_PCD)
    toks, masks = [], []
    for j in range(N_PC):
        t, m = pool_tokens(feats[j:j + 1], torch.as_tensor(points[j][None, :, :3]), L_PCD)
        toks.append(t[0]); masks.append(m[0])
    cloud_tokens, cloud_mask = torch.stack(toks), torch.stack(masks)
    captions = [f"shape {j} number {k}" for j in range(N_PC) for k in range(2)]
    txt_to_pc = torch.tensor([j for j in range(N_PC) for _ in range(2)])
    with torch.no_grad():
        t_tok, t_mask = _fake_encoder(captions)
        text_emb = model.encode_text(t_tok, t_mask)
        cloud_emb = model.encode_cloud(cloud_tokens, cloud_mask)
    return W.RetrievalSession(
        model=model, encode_captions=_fake_encoder, cloud_tokens=cloud_tokens, cloud_mask=cloud_mask,
        cloud_emb=cloud_emb, cloud_names=[f"obj{j}" for j in range(N_PC)], cloud_points=points,
        cloud_categories=[f"cat{j % 2}" for j in range(N_PC)], text_emb=text_emb, captions=captions,
        txt_to_pc=txt_to_pc, caption_levels=[k for _ in range(N_PC) for k in range(2)],
        tokenize=lambda s: s.split())


def test_search_ranks_by_lorentz_distance(session):
    results = W.search(session, "shape 3 number 1", k=4)
    assert [r.rank for r in results] == [1, 2, 3, 4]
    tok, mask = _fake_encoder(["shape 3 number 1"])
    with torch.no_grad():
        q = session.model.encode_text(tok, mask)
    d = L.pairwise_dist(q.double(), session.cloud_emb.double(), session.curvature)[0]
    expected = torch.argsort(d)[:4].tolist()
    assert [r.index for r in results] == expected
    assert [r.name for r in results] == [f"obj{i}" for i in expected]
    np.testing.assert_allclose([r.distance for r in results], d[expected].numpy(), rtol=1e-6)


def test_search_rejects_empty_query_and_clamps_k(session):
    with pytest.raises(ValueError, match="empty"):
        W.search(session, "   ")
    assert len(W.search(session, "shape", k=50)) == N_PC


def test_disk_layout_keeps_distance_to_origin(session):
    layout = W.disk_layout(session)
    c = session.curvature
    true_t = L.dist0(session.text_emb[layout.text_index].double(), c)
    np.testing.assert_allclose(layout.text_v.norm(dim=-1).numpy(), true_t.numpy(), rtol=1e-6)
    true_p = L.dist0(session.cloud_emb[layout.cloud_index].double(), c)
    np.testing.assert_allclose(layout.cloud_v.norm(dim=-1).numpy(), true_p.numpy(), rtol=1e-6)
    assert 0.0 < layout.captured <= 1.0 + 1e-9


def test_cone_fractions_full_space_matches_direct_computation(session):
    layout = W.disk_layout(session)
    c = session.curvature
    for K in (0.05, 0.5):
        frac = W.cone_fractions(session, layout, c, K)
        t = session.text_emb[layout.text_index].double()
        p = session.cloud_emb[session.txt_to_pc[layout.text_index]].double()
        inside = (L.exterior_angle(t, p, c) <= L.half_aperture(t, c, K)).double().mean()
        assert frac["full_space"] == pytest.approx(float(inside))
        assert frac["pairs"] == len(layout.text_index)
    # a wider aperture can only contain more
    assert W.cone_fractions(session, layout, c, 0.9)["full_space"] >= W.cone_fractions(session, layout, c, 0.01)["full_space"]


def test_draw_functions_return_figures(session):
    res = W.search(session, "shape 1", k=3)
    for fig in (W.draw_results(session, res, "shape 1", target="obj1"),
                W.draw_disk(session, None, 0.1, query="shape 1", highlight=[r.index for r in res], cone_resolution=40),
                W.draw_disk(session, 3.0, 0.3, cone_resolution=40),
                W.draw_contributions(session, res[0].index),
                W.draw_text_contributions(session, "shape 1")):
        assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
        plt.close(fig)
    with pytest.raises(ValueError, match="curvature"):
        W.draw_disk(session, -1.0, 0.1)


@pytest.mark.parametrize("num_points", [None, 40])
def test_token_assignment_replays_spatial_pooling(session, num_points):
    """Pool one-hot per-point features exactly as extraction does; token t then holds 1 at its members."""
    pts = session.cloud_points[2]
    kept = torch.as_tensor(pts) if num_points is None else fps_downsample(torch.as_tensor(pts), num_points)
    n = kept.shape[0]
    tokens, mask = pool_tokens(torch.eye(n)[None], kept[None, :, :3], L_PCD)
    members = tokens[0].T.argmax(-1).numpy()                     # (n,) token of each kept point
    assign = W.token_assignment(pts, L_PCD, num_points)
    assert assign.shape == (len(pts),)
    # the kept points get exactly the extraction's grouping
    kept_rows = [int(np.flatnonzero((pts[:, :3] == row[:3].numpy()).all(1))[0]) for row in kept]
    np.testing.assert_array_equal(assign[kept_rows], members)
    assert set(assign.tolist()) <= set(np.flatnonzero(mask[0].numpy()).tolist())


def test_contribution_map_sums_to_one_and_matches_model(session):
    points, per_point, w = W.contribution_map(session, 4)
    with torch.no_grad():
        ref = session.model.contributions(session.cloud_tokens[4:5], session.cloud_mask[4:5], "cloud")[0]
    np.testing.assert_allclose(w, ref.numpy(), rtol=1e-6)
    assert per_point.shape == (len(points),)
    assert per_point.sum() == pytest.approx(1.0, abs=1e-5)
    names, tw = W.text_contributions(session, "shape 4 number 0")
    assert names == ["shape", "4", "number", "0"] and tw.sum() == pytest.approx(1.0, abs=1e-5)


def test_app_callbacks_run_headless(session):
    app = W.RetrievalApp(session, query="shape 5 number 0", k=3, render=False)
    assert [r.rank for r in app.results] == [1, 2, 3]
    assert {"results", "disk", "contributions", "text"} <= set(app.figures)
    first_disk = app.figures["disk"]
    app.curvature.value = 2.0                     # slider -> redraw
    assert app.figures["disk"] is not first_disk
    assert "c = 2" in app.figures["disk"].axes[0].get_title()
    app.aperture.value = 0.4
    assert "K = 0.4" in app.figures["disk"].axes[0].get_title()
    other = app.results[-1].index
    before = app.figures["contributions"]
    app.shape.value = other                       # selector -> contributions of that shape
    assert app.figures["contributions"] is not before
    assert session.cloud_names[other] in app.figures["contributions"].axes[0].get_title()
    app.k.value = 2
    assert len(app.results) == 2
    app.query.value = "  "                         # empty query: nothing happens, no crash
    assert len(app.results) == 2


def test_session_validates_lengths(session):
    with pytest.raises(ValueError, match="cloud_names"):
        W.RetrievalSession(model=session.model, encode_captions=_fake_encoder, cloud_tokens=session.cloud_tokens,
                           cloud_mask=session.cloud_mask, cloud_emb=session.cloud_emb, cloud_names=["a"],
                           cloud_points=session.cloud_points, text_emb=session.text_emb,
                           captions=session.captions, txt_to_pc=session.txt_to_pc)
    assert math.isfinite(session.curvature)
