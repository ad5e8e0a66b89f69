"""Point encoders: shapes and dtypes, invariances, token pooling, geometry helpers, strict weight loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from h2arn.encoders import DGCNN, PointNet, PointNet2, build_point_encoder, pool_tokens
from h2arn.encoders.tokens import ball_query, build_input, farthest_point_sample, fps_downsample
from h2arn.encoders.weights import (CheckpointError, MODELNET40_CLASSES, load_point_encoder, load_strict,
                                    save_encoder_checkpoint, shared_pointnet_path)

TINY = {
    "PointNet": dict(channels="xyz", emb_dims=64, token_dim=32),
    "PointNet2": dict(channels="xyzrgb", width=0.25, npoint1=48, npoint2=24, token_dim=32),
    "DGCNN": dict(channels="xyzrgbn", k=8, width=16, emb_dims=64, out_dim=32),
}


def cloud(b=2, n=96, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(b, n, 3, generator=g) * 2 - 1
    rgb = torch.rand(b, n, 3, generator=g)
    return torch.cat([xyz, rgb], -1).to(dtype)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_shapes_and_dtype(name, dtype):
    enc = build_point_encoder(name, num_tokens=16, num_classes=5, **TINY[name]).to(dtype).eval()
    with torch.no_grad():
        tokens, mask = enc(cloud(dtype=dtype))
        logits = enc.classify(cloud(dtype=dtype))
    assert tokens.shape == (2, 16, 32) and tokens.dtype == dtype
    assert mask.shape == (2, 16) and mask.dtype == torch.bool and mask.all()
    assert logits.shape == (2, 5)
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("cls", [PointNet, DGCNN])
def test_global_feature_is_permutation_invariant(cls):
    name = cls.model_name
    enc = cls(**TINY[name]).double().eval()
    x = cloud(n=80, dtype=torch.float64)
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = enc.global_feature(x), enc.global_feature(x[:, perm])
    assert torch.allclose(a, b, atol=1e-10)


def test_spatial_pooling_groups_regions():
    # two far-apart clusters, 2 tokens: each token must be the max over exactly one cluster
    g = torch.Generator().manual_seed(0)
    xyz = torch.cat([torch.rand(1, 20, 3, generator=g) * 0.1, torch.rand(1, 20, 3, generator=g) * 0.1 + 5], 1)
    feats = torch.arange(40, dtype=torch.float32).reshape(1, 40, 1).expand(1, 40, 2).contiguous()
    tokens, mask = pool_tokens(feats, xyz, num_tokens=2, method="spatial")
    assert mask.all()
    assert sorted(tokens[0, :, 0].tolist()) == [19.0, 39.0]


def test_spatial_pooling_masks_missing_tokens_for_small_clouds():
    enc = PointNet(**TINY["PointNet"], num_tokens=16).eval()
    with torch.no_grad():
        tokens, mask = enc(cloud(b=1, n=10))
    assert mask.sum() == 10
    assert (tokens[0, ~mask[0]] == 0).all()


def test_index_pooling_is_the_official_adaptive_max_pool():
    feats = torch.rand(2, 50, 4)
    tokens, mask = pool_tokens(feats, torch.rand(2, 50, 3), num_tokens=10, method="index")
    assert torch.equal(tokens, feats.reshape(2, 10, 5, 4).amax(2)) and mask.all()
    with pytest.raises(ValueError, match="unknown token pooling"):
        pool_tokens(feats, torch.rand(2, 50, 3), 10, method="mean")


def test_fps_is_deterministic_and_starts_far_from_centroid():
    x = cloud(b=1, n=200)[0]
    idx = farthest_point_sample(x[None, :, :3], 20)[0]
    assert len(set(idx.tolist())) == 20
    assert idx[0] == ((x[:, :3] - x[:, :3].mean(0)) ** 2).sum(-1).argmax()
    assert torch.equal(fps_downsample(x, 20), x[idx])
    assert fps_downsample(x, 500) is x


def test_ball_query_stays_in_radius():
    xyz = cloud(b=2, n=100)[..., :3]
    centres = xyz[:, :10]
    idx = ball_query(centres, xyz, 0.5, 16)
    assert idx.shape == (2, 10, 16)
    d = (torch.gather(xyz, 1, idx.reshape(2, -1, 1).expand(-1, -1, 3)).reshape(2, 10, 16, 3) - centres[:, :, None]).norm(dim=-1)
    assert (d <= 0.5 + 1e-6).all()


def test_pointnet2_msg_and_knn_variants():
    for kw in (dict(variant="msg"), dict(grouping="knn")):
        enc = PointNet2(**{**TINY["PointNet2"], **kw}, num_tokens=8).eval()
        with torch.no_grad():
            tokens, mask = enc(cloud())
        assert tokens.shape == (2, 8, 32)


def test_missing_rgb_is_a_clear_error():
    with pytest.raises(ValueError, match="needs 6 input columns"):
        build_input(torch.rand(1, 10, 3), "xyzrgbn")


# --------------------------------------------------------------------------- weights

def test_checkpoint_round_trip(tmp_path):
    enc = DGCNN(**TINY["DGCNN"], num_tokens=8, num_classes=3).eval()
    path = save_encoder_checkpoint(enc, tmp_path / "enc.pt", classes=["a", "b", "c"])
    loaded, info = load_point_encoder(path)
    x = cloud()
    with torch.no_grad():
        assert torch.allclose(enc(x)[0], loaded(x)[0])
    assert info["classes"] == ["a", "b", "c"] and info["format"] == "h2arn"
    with pytest.raises(CheckpointError, match="--pc_model"):
        load_point_encoder(path, pc_model="PointNet")


def test_strict_loading_lists_missing_unexpected_and_shape_mismatch():
    enc = PointNet(**TINY["PointNet"])
    sd = enc.state_dict()
    bad = dict(sd)
    del bad["backbone.conv2.weight"]
    bad["extra.weight"] = torch.zeros(1)
    bad["backbone.conv1.weight"] = torch.zeros(64, 9, 1)
    with pytest.raises(CheckpointError) as err:
        load_strict(enc, bad, source="x.pt")
    msg = str(err.value)
    assert "missing keys [backbone.conv2.weight]" in msg
    assert "unexpected keys [extra.weight]" in msg
    assert "backbone.conv1.weight: file (64, 9, 1) vs model (64, 3, 1)" in msg
    assert msg.startswith("x.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt.*weights_only"):
        load_point_encoder(bad)
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_point_encoder(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_point_encoder(tmp_path / "nope.pt")
    fake = tmp_path / "pointnet_modelnet40.t7"  # a known name with the wrong bytes: sha256 check
    torch.save({}, fake)
    with pytest.raises(CheckpointError, match="sha256"):
        load_point_encoder(fake)


def test_learning3d_key_map(tmp_path):
    ours = PointNet(channels="xyz", emb_dims=64, num_classes=40)
    theirs = {}
    for k, v in ours.state_dict().items():
        k = k.replace("backbone.", "feature_model.") if k.startswith("backbone.") else k.replace("head.", "")
        theirs[k] = v
    torch.save(theirs, tmp_path / "l3d.t7")
    loaded, info = load_point_encoder(tmp_path / "l3d.t7")
    assert info["format"] == "learning3d_pointnet" and loaded.config()["emb_dims"] == 64
    del theirs["linear2.weight"]
    torch.save(theirs, tmp_path / "l3d_bad.t7")
    with pytest.raises(CheckpointError, match=r"missing keys \[head.linear2.weight\]"):
        load_point_encoder(tmp_path / "l3d_bad.t7")


def test_antao97_dgcnn_key_map(tmp_path):
    ours = DGCNN(width=16, emb_dims=64, out_dim=32)
    theirs = {"module." + k: v for k, v in ours.state_dict().items()}
    theirs["module.conv9.weight"] = torch.zeros(13, 32, 1)  # segmentation head: dropped by the map
    torch.save(theirs, tmp_path / "model_1.t7")
    loaded, info = load_point_encoder(tmp_path / "model_1.t7", pc_model="DGCNN")
    assert info["format"] == "antao97_dgcnn" and loaded.config()["width"] == 16


@pytest.mark.skipif(shared_pointnet_path() is None, reason="../shared (public PointNet checkpoint) not present")
def test_shared_pointnet_classifies_generated_modelnet_classes():
    shapes = pytest.importorskip("h2arn.data.shapes")
    enc, info = load_point_encoder(shared_pointnet_path())
    assert info["format"] == "learning3d_pointnet" and len(info["classes"]) == 40
    names = ["vase", "cup", "bowl", "lamp", "bottle", "stool"]
    rng = np.random.default_rng(0)
    clouds, labels = [], []
    for cat in names:
        for _ in range(3):
            xyz, rgb, _ = shapes.object_points(shapes.ARTEFACT_BUILDERS[cat](rng), 1024, rng)
            clouds.append(np.concatenate([xyz, rgb], 1))
            labels.append(MODELNET40_CLASSES.index(cat))
    with torch.no_grad():
        pred = enc.classify(torch.tensor(np.stack(clouds), dtype=torch.float32)).argmax(-1)
    acc = (pred == torch.tensor(labels)).float().mean().item()
    assert acc > 0.4, f"accuracy {acc:.2f} (chance 1/40)"


def test_pretraining_learns_two_shape_classes():
    from types import SimpleNamespace

    from h2arn.encoders.pretrain import pretrain_encoder

    rng = np.random.default_rng(0)

    def shape(kind):
        p = rng.normal(size=(128, 3))
        p = p / np.linalg.norm(p, axis=1, keepdims=True) if kind == "sphere" else np.clip(p, -0.6, 0.6) * [1, 0.1, 1]
        return np.concatenate([p, rng.random((128, 3))], 1).astype(np.float32)

    recs = [SimpleNamespace(name=f"{k}_{i}", points=shape(k), meta={"category": k}) for i in range(8)
            for k in ("sphere", "plate")]
    enc, classes, metrics = pretrain_encoder("PointNet", recs, val_records=recs, config=dict(emb_dims=32),
                                             epochs=15, batch_size=8, train_points=64, device="cpu", progress=False)
    assert classes == ["plate", "sphere"]
    assert metrics["val_acc"] >= 0.9


def test_batched_downsampling_matches_per_cloud_fps():
    from h2arn.encoders.tokens import downsample_clouds

    clouds = [cloud(b=1, n=n, seed=s)[0] for s, n in enumerate((150, 150, 90, 150))]
    batched = downsample_clouds(clouds, 100)
    for c, b in zip(clouds, batched):
        assert torch.equal(fps_downsample(c, 100), b)
