"""h2arn.search.Retriever and its CLI on a tiny model, a tiny real PointNet and a fake text encoder (seconds)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")

from h2arn import search as S  # noqa: E402
from h2arn.search import recorded  # noqa: E402
from h2arn.checkpoint import save_model_file  # noqa: E402
from h2arn.encoders import PointNet  # noqa: E402
from h2arn.encoders.pretrain import category_from_name  # noqa: E402
from h2arn.encoders.weights import save_encoder_checkpoint, sha256_file  # noqa: E402
from h2arn.model import H2ARN, ModelConfig  # noqa: E402

D_TXT, L_TXT, TOKENS, TOKEN_DIM, POINTS = 8, 6, 4, 8, 64


class FakeTokenizer:
    def __call__(self, text, truncation=True, max_length=L_TXT):
        return {"input_ids": [zlib.crc32(w.encode()) % 997 for w in text.split()[:max_length]]}

    def convert_ids_to_tokens(self, ids):
        return [f"w{i}" for i in ids]


class FakeText:
    """Deterministic text encoder: one seeded random token per word (no transformers model to load)."""

    max_length = L_TXT
    tokenizer = FakeTokenizer()

    def encode(self, captions, batch_size=64, progress=True):
        tokens = torch.zeros(len(captions), L_TXT, D_TXT)
        mask = torch.zeros(len(captions), L_TXT, dtype=torch.bool)
        for i, cap in enumerate(captions):
            for j, word in enumerate(cap.split()[:L_TXT]):
                tokens[i, j] = torch.randn(D_TXT, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))
                mask[i, j] = True
        return tokens, mask


def _model_file(tmp, name, seed, enc_path, features=True):
    torch.manual_seed(seed)
    model = H2ARN(ModelConfig(d_txt=D_TXT, d_pcd=TOKEN_DIM, d_model=8, nhead=2, num_layers=1, curv_init=0.8)).eval()
    feats = {"pc_model": "PointNet", "pc_weights_sha256": sha256_file(enc_path), "pc_weights": str(enc_path),
             "num_points": POINTS, "num_tokens": TOKENS, "pooling": "spatial",
             "txt_model": {"name": "FAKE", "source": "default"}, "max_length": L_TXT}
    return save_model_file(tmp / name, model, extra={"features": feats} if features else None)


def _write_shapes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    meshes = [trimesh.creation.box(extents=(1, 2, 0.5)), trimesh.creation.box(extents=(2, 0.3, 1)),
              trimesh.creation.cylinder(radius=0.3, height=1.5), trimesh.creation.icosphere(1),
              trimesh.creation.capsule(height=1.0, radius=0.2)]
    for m, suffix in zip(meshes, (".obj", ".ply", ".off", ".stl", ".glb")):
        m.export(folder / f"shape{suffix.replace('.', '_')}{suffix}")
    rng = np.random.default_rng(0)
    np.save(folder / "cloud.npy", rng.normal(size=(150, 3)) * [0.3, 1.0, 0.5])
    np.savetxt(folder / "cloud2.xyz", rng.normal(size=(90, 3)) * [1.0, 0.2, 0.5])
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    enc = PointNet(channels="xyz", emb_dims=16, token_dim=TOKEN_DIM, num_tokens=TOKENS).eval()
    enc_path = save_encoder_checkpoint(enc, tmp / "encoder.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recorded, "text_encoder", lambda features, path, device: FakeText())
        yield {"tmp": tmp, "enc": enc_path, "model_a": _model_file(tmp, "a.pth", 0, enc_path),
               "model_b": _model_file(tmp, "b.pth", 1, enc_path), "shapes": _write_shapes(tmp / "shapes"),
               "cache": tmp / "cache"}


def _retriever(env, model="model_a"):
    return S.Retriever.from_run(env[model], "cpu", cache_dir=env["cache"], progress=False)


def test_search_equals_brute_force_ranking_of_model_similarity(env):
    r = _retriever(env)
    ids = r.add_shapes(env["shapes"])
    assert len(ids) == 7 and len(set(ids)) == 7
    query = "a tall box with a lid"
    res = r.search(query, k=len(ids))
    tok, mask = FakeText().encode([query])
    from h2arn.extract import encode_clouds
    from h2arn.meshes import find_shapes, read_shape

    clouds = [read_shape(p, POINTS) for p in find_shapes(env["shapes"])]
    pc, pc_mask = encode_clouds(r.point_encoder, clouds, POINTS, progress=False)
    with torch.no_grad():
        sim = r.model.similarity(r.model.encode_text(tok, mask), r.model.encode_cloud(pc, pc_mask))[0].double()
    expect = torch.argsort(-sim, stable=True).tolist()
    assert [h.index for h in res.hits] == expect
    np.testing.assert_allclose([h.distance for h in res.hits], (-sim[expect]).numpy(), rtol=1e-5, atol=1e-6)
    assert [h.rank for h in res.hits] == list(range(1, len(ids) + 1))
    for h in res.hits:
        assert h.token_weights.sum() == pytest.approx(1.0, abs=1e-5) and len(h.token_weights) <= TOKENS
    assert res.query_tokens == [f"w{zlib.crc32(w.encode()) % 997}" for w in query.split()]
    assert res.query_token_weights.sum() == pytest.approx(1.0, abs=1e-5)
    many = r.search_many([query, "a round ball"], k=3)
    assert [h.id for h in many[0].hits] == [h.id for h in res.hits[:3]]
    assert [h.id for h in many[1].hits] == [h.id for h in r.search("a round ball", 3).hits]


def test_arrays_and_ids(env):
    r = _retriever(env)
    rng = np.random.default_rng(3)
    got = r.add_shapes([rng.normal(size=(80, 3)), rng.normal(size=(100, 6)) * [1, 1, 1, 0, 0, 0] + 0.5],
                       ids=["x", "x"])
    assert got == ["x", "x~1"]
    assert r.search("anything", 5).hits[0].id in got
    with pytest.raises(S.SearchError, match="empty"):
        r.search("   ")


def test_gallery_cache_embeds_each_file_once(env, monkeypatch):
    r = _retriever(env)
    r.add_shapes(env["shapes"])                       # fills (or reuses) the cache
    calls = []
    import h2arn.extract as E

    real = E.encode_clouds
    monkeypatch.setattr(E, "encode_clouds", lambda *a, **k: calls.append(1) or real(*a, **k))
    r2 = _retriever(env)
    r2.add_shapes(env["shapes"])
    assert calls == []                                # every token came from the cache
    torch.testing.assert_close(r2.gallery.emb, r.gallery.emb)


def test_z_up_copy_gives_the_same_embedding_with_up_z(env, tmp_path):
    rng = np.random.default_rng(5)
    y_up = rng.normal(size=(120, 3)) * [0.3, 1.0, 0.5]
    np.save(tmp_path / "y.npy", y_up)
    np.save(tmp_path / "z.npy", np.stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]], 1))
    r = _retriever(env)
    r.add_shapes(tmp_path / "y.npy", up="y")
    r.add_shapes(tmp_path / "z.npy", up="z")
    r.add_shapes(tmp_path / "z.npy", up="y")          # the same file read with the wrong axis
    emb = r.gallery.emb
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(emb[0], emb[2], atol=1e-3)


def test_gallery_folder_round_trip_cli_json_html_and_index(env, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert S.main(["index", "--model", str(env["model_a"]), "--shapes", str(env["shapes"]), "--out", str(out),
                   "--cache", str(env["cache"])]) == 0
    assert (out / S.GALLERY_FILE).is_file() and not list(tmp_path.glob(".gallery.tmp-*"))
    capsys.readouterr()
    html = tmp_path / "page.html"
    assert S.main(["query", "--gallery", str(out), "a tall box", "--k", "3", "--json", "--html", str(html)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in data[0]["hits"]] == [1, 2, 3]
    assert {"id", "path", "distance", "rank"} <= set(data[0]["hits"][0])
    r = _retriever(env)
    r.add_shapes(env["shapes"])
    assert [h["id"] for h in data[0]["hits"]] == [h.id for h in r.search("a tall box", 3).hits]
    assert html.read_text().count("<img") == 3
    # the same gallery through the FAISS index (what large galleries use) ranks identically
    r.save_gallery(tmp_path / "indexed", index="flat")
    r2 = _retriever(env).load_gallery(tmp_path / "indexed")
    assert r2.index is not None
    assert [h.id for h in r2.search("a tall box", 5).hits] == [h.id for h in r.search("a tall box", 5).hits]


def test_gallery_of_model_a_is_refused_by_model_b(env, tmp_path, capsys):
    out = tmp_path / "g"
    r = _retriever(env)
    r.add_shapes(env["shapes"])
    r.save_gallery(out)
    with pytest.raises(S.SearchError, match="another model"):
        _retriever(env, "model_b").load_gallery(out)
    assert S.main(["query", "--gallery", str(out), "--model", str(env["model_b"]), "a box"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "another model" in err and len(err.splitlines()) == 1


def test_model_files_must_record_their_feature_extractor(env, tmp_path):
    bare = _model_file(tmp_path, "bare.pth", 0, env["enc"], features=False)
    with pytest.raises(S.SearchError, match="does not record how its features were made"):
        S.Retriever.from_run(bare, "cpu")
    other = save_encoder_checkpoint(PointNet(channels="xyz", emb_dims=16, token_dim=TOKEN_DIM, num_tokens=TOKENS),
                                    tmp_path / "other.pt")
    with pytest.raises(S.SearchError, match="sha256"):
        S.Retriever.from_run(env["model_a"], "cpu", pc_weights=other)


@pytest.mark.parametrize("case", ["unreadable", "empty", "no_shapes", "nan", "not_a_gallery_dir"])
def test_bad_input_one_clear_error_and_no_half_gallery(env, tmp_path, capsys, case):
    shapes = tmp_path / "in"
    shapes.mkdir()
    np.save(shapes / "ok.npy", np.random.default_rng(0).normal(size=(50, 3)))
    out = tmp_path / "gallery"
    bad = None
    if case == "unreadable":
        bad = shapes / "broken.glb"
        bad.write_bytes(b"glTF\x02\x00\x00\x00 truncated")
    elif case == "empty":
        bad = shapes / "empty.stl"
        bad.write_bytes(b"")
    elif case == "no_shapes":
        for p in shapes.iterdir():
            p.unlink()
        (shapes / "readme.md").write_text("no shapes here")
    elif case == "nan":
        bad = shapes / "nan.obj"
        bad.write_text("v 0 0 0\nv 1 0 0\nv 0 nan 0\nf 1 2 3\n")
    else:
        out.mkdir()
        (out / "my_file.txt").write_text("precious")
    # a previous good gallery must survive a failed re-index untouched
    if case != "not_a_gallery_dir":
        r = _retriever(env)
        r.add_shapes(np.random.default_rng(1).normal(size=(40, 3)), ids=["old"])
        r.save_gallery(out)
        before = (out / S.GALLERY_FILE).read_text()
    code = S.main(["index", "--model", str(env["model_a"]), "--shapes", str(shapes), "--out", str(out),
                   "--cache", str(env["cache"])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    if bad is not None:
        assert str(bad) in err
    if case == "not_a_gallery_dir":
        assert (out / "my_file.txt").read_text() == "precious"
    else:
        assert (out / S.GALLERY_FILE).read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gallery")]


def test_rgb_encoder_refuses_xyz_only_shapes_clearly(env, tmp_path):
    torch.manual_seed(0)
    enc = save_encoder_checkpoint(PointNet(channels="xyzrgb", emb_dims=16, token_dim=TOKEN_DIM, num_tokens=TOKENS),
                                  tmp_path / "rgb.pt")
    r = S.Retriever.from_run(_model_file(tmp_path, "rgb.pth", 0, enc), "cpu", cache_dir=tmp_path / "c",
                             progress=False)
    with pytest.raises(S.SearchError, match="has no colours"):
        r.add_shapes(np.zeros((10, 3)) + np.arange(10)[:, None] * [1, 2, 3])
    r.add_shapes(np.concatenate([np.random.default_rng(0).normal(size=(30, 3)), np.full((30, 3), 0.5)], 1))
    assert len(r.gallery) == 1


def test_session_from_own_gallery_and_shapenet_names(env):
    r = _retriever(env)
    r.add_shapes(env["shapes"])
    session = r.session()
    assert session.search("a tall box", 2)[0].name == r.search("a tall box", 2).hits[0].id
    assert category_from_name("bottle_1d4480abe9aa45ce51a99c0e19a8a54") == "bottle"
    assert category_from_name("vase_12") == "vase" and category_from_name("Area_3_office_1") == "office"


def test_feature_settings_come_from_the_extraction_manifest(tmp_path):
    from h2arn.extract import MANIFEST, ExtractError, feature_settings

    opts = {"format": 1, "pc_model": "PointNet", "txt_model": {"name": "MiniLM", "source": "default"},
            "num_points": 1024, "num_tokens": 100, "pooling": "spatial", "max_length": 77, "pc_weights": "ab" * 32}
    entries = {"Elephant/train": {"options": opts, "pc_weights": "/w/enc.pt"},
               "S3DIS/train": {"options": {**opts, "num_tokens": 50}, "pc_weights": "/w/enc.pt"}}
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "entries": entries}))
    got = feature_settings([tmp_path / "Elephant_link_train.json"])
    assert got == {"pc_model": "PointNet", "pc_weights_sha256": "ab" * 32, "pc_weights": "/w/enc.pt",
                   "num_points": 1024, "num_tokens": 100, "pooling": "spatial",
                   "txt_model": {"name": "MiniLM", "source": "default"}, "max_length": 77}
    with pytest.raises(ExtractError, match="num_tokens"):
        feature_settings([tmp_path / "Elephant_link_train.json", tmp_path / "S3DIS_link_train.json"])
    assert feature_settings([tmp_path / "other" / "Elephant_link_train.json"]) is None


def test_inference_refuses_features_made_differently(env, tmp_path):
    from h2arn.extract import MANIFEST, check_features_match
    from h2arn.features import FeatureError

    recorded = torch.load(env["model_a"], weights_only=True)["features"]
    opts = {"format": 1, "pc_model": "PointNet", "txt_model": recorded["txt_model"], "num_points": POINTS,
            "num_tokens": 50, "pooling": "spatial", "max_length": L_TXT, "pc_weights": recorded["pc_weights_sha256"]}
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "entries": {"Elephant/test": {"options": opts}}}))
    with pytest.raises(FeatureError, match="num_tokens: 50 vs 4"):
        check_features_match(recorded, [tmp_path / "Elephant_link_test.json"], "the model a.pth")
    check_features_match(recorded, [tmp_path / "S3DIS_link_test.json"], "the model a.pth")   # no record: no check
