r"""The encoders a model file records: the text and point encoders its training features were made with.

Why a module of its own: embedding new shapes or queries for a trained model is only meaningful with the
very encoders (and weights) behind its features; :func:`h2arn.extract.feature_settings` writes them into
the model file, and this module rebuilds them from there, refusing any whose files have changed since.
Called as ``recorded.text_encoder(...)`` / ``recorded.point_encoder(...)`` by :meth:`Retriever.from_run`.
"""
from __future__ import annotations

from pathlib import Path

from .errors import SearchError


def text_encoder(features: dict, model_file: Path, device):
    """The text encoder named in the model file; refused when its files differ from the recorded ones."""
    from h2arn.encoders.text import load_text_encoder
    from h2arn.extract import text_identity

    rec = dict(features["txt_model"])
    path = None if rec.get("source", "default") == "default" else rec["source"]
    now = text_identity(rec["name"], path)
    if rec.get("files") is not None and now.get("files") != rec.get("files"):
        raise SearchError(f"{model_file}: its features were made with the {rec['name']} text model from {rec['source']}, "
                          "but the files found there now differ, so queries would not match the captions it was "
                          "trained on. Fix: install the text model it was trained with (pyproject.toml pins it), or retrain.")
    return load_text_encoder(rec["name"], path, device=device, max_length=int(features["max_length"]), progress=False)


def point_encoder(features: dict, model_file: Path, device, override=None):
    """The point encoder (and weights) the model's features were made with, checked by sha256."""
    from h2arn.encoders.weights import load_point_encoder, sha256_file, shared_pointnet_path
    from h2arn.extract import build_pc_encoder

    sha = features["pc_weights_sha256"]
    if sha == "random":
        return build_pc_encoder("random", None, features["pc_model"], int(features["num_tokens"]),
                                features["pooling"], device)
    candidates = [Path(override)] if override is not None else \
        [Path(p) for p in (features.get("pc_weights"), shared_pointnet_path()) if p]
    for path in candidates:
        if path.is_file() and sha256_file(path) == sha:
            enc, _ = load_point_encoder(path, pc_model=features["pc_model"], num_tokens=int(features["num_tokens"]),
                                        pooling=features["pooling"])
            return enc.to(device)
    where = ", ".join(map(str, candidates)) or "nowhere"
    raise SearchError(f"{model_file}: its features were made with {features['pc_model']} weights of sha256 {sha[:12]}... "
                      f"(recorded at {features.get('pc_weights')}); no file with that content at {where}. Fix: pass "
                      "--pc_weights <that file> (e.g. rebuild it with the same ensure_features/extract command), or "
                      "retrain the model on features of weights you have.")
