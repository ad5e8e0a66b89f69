"""The zero-shot bridge: text-to-shape search with no training at all, the baseline on real shapes.

Score of shape ``j`` for query ``q``::

    s(q, j) = sum_c  cos(MiniLM(q), MiniLM(name_c)) * p(c | shape_j)

``MiniLM`` is the sentence embedding (masked mean, L2-normalised) of the frozen text encoder the course
uses, ``name_c`` the 40 ModelNet40 class names, ``p(c | shape)`` the shared ModelNet40 PointNet's class
posterior (``<shared>/data/pretrained/pointnet_modelnet40.t7``, :mod:`h2arn.encoders.weights`). The text
side says which classes a query is about, the shape side which class a shape looks like; their dot
product ranks shapes. It knows only 40 class names, so it cannot follow attributes ("with two
handles"), but on real ShapeNet shapes it is strong (class-name mAP ~0.86, measured in
``../shared/data/real_shapes_dev/README.md``) where models trained on the generated benchmark reach ~0.30:
the honest baseline every learned model of the course is compared with on real shapes (chapter 08).

Also here: the 48 real ShapeNet clouds of ``<shared>/data/real_shapes_dev`` (:func:`load_real_shapes`,
None when the shared folder is absent; never copied into the repository) and the query sets used to
measure on them (:data:`REAL_SHAPE_QUERIES`: class names, paraphrases, abstract queries).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ZeroShotBridge", "BridgeError", "load_real_shapes", "RealShapes", "REAL_SHAPE_QUERIES", "class_prompt",
           "map_by_query_type", "paired_map_difference", "query_list"]

POSTERIOR_POINTS = 1024   # the shared checkpoint's input size (KNOWN_CHECKPOINTS: 1024 points, xyz, y-up)


class BridgeError(RuntimeError):
    """The bridge's inputs (shared PointNet, text model) are missing; the message says the fix."""


def class_prompt(name: str) -> str:
    """``"flower_pot"`` -> ``"a flower pot"`` (the text the class name is embedded as)."""
    return "a " + name.replace("_", " ")


@dataclass
class ZeroShotBridge:
    """MiniLM query -> ModelNet40 class similarities -> dot with the shared PointNet's posterior."""

    text_encoder: object
    classifier: torch.nn.Module
    class_names: list[str]
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_shared(cls, device: str = "auto", weights: str | os.PathLike | None = None,
                    text_encoder=None) -> "ZeroShotBridge":
        """Load MiniLM and the shared ModelNet40 PointNet (``weights`` overrides the shared path).

        ``text_encoder``: an already loaded MiniLM :class:`h2arn.encoders.text.TextEncoder` to reuse.
        """
        from h2arn.device import resolve_device
        from h2arn.encoders.text import load_text_encoder
        from h2arn.encoders.weights import load_point_encoder, shared_pointnet_path

        path = Path(weights) if weights is not None else shared_pointnet_path()
        if path is None:
            raise BridgeError("the zero-shot bridge needs the shared ModelNet40 PointNet "
                              "(<shared>/data/pretrained/pointnet_modelnet40.t7). Fix: set H2ARN_SHARED to the shared "
                              "folder, or pass weights=<path of pointnet_modelnet40.t7>.")
        dev = resolve_device(device)
        classifier, info = load_point_encoder(path)
        if not info["classes"] or classifier.num_classes != len(info["classes"]):
            raise BridgeError(f"{path}: has no class names for its {classifier.num_classes} logits. Fix: pass the "
                              "ModelNet40 PointNet classifier checkpoint.")
        if text_encoder is not None and getattr(text_encoder, "name", None) != "MiniLM":
            raise BridgeError(f"the bridge embeds queries with MiniLM, got a {text_encoder.name} text encoder. Fix: "
                              "pass a MiniLM encoder or none.")
        text = text_encoder or load_text_encoder("MiniLM", device=dev, progress=False)
        return cls(text, classifier.to(dev).eval(), list(info["classes"]), dev)

    @torch.no_grad()
    def class_posterior(self, clouds: Sequence[np.ndarray]) -> Tensor:
        """``(N, 40)`` softmax class probabilities of y-up, unit-sphere clouds ``[(P_i, >=3)]`` (FPS to 1024)."""
        from h2arn.encoders.tokens import downsample_clouds

        pts = downsample_clouds([torch.as_tensor(np.asarray(c)[:, :3], dtype=torch.float32) for c in clouds],
                                POSTERIOR_POINTS)
        out = torch.zeros(len(pts), len(self.class_names))
        by_size: dict[int, list[int]] = {}
        for i, p in enumerate(pts):            # batch clouds of equal size (smaller ones stay smaller)
            by_size.setdefault(p.shape[0], []).append(i)
        for ids in by_size.values():
            for s in range(0, len(ids), 64):
                chunk = ids[s:s + 64]
                logits = self.classifier.classify(torch.stack([pts[i] for i in chunk]).to(self.device)).float()
                out[chunk] = torch.softmax(logits, -1).cpu()
        return out

    @torch.no_grad()
    def query_class_similarity(self, queries: Sequence[str]) -> Tensor:
        """``(Q, 40)`` cosine similarity of each query's sentence embedding to each class name's."""
        q = self.text_encoder.sentence_embeddings(list(queries))
        c = self.text_encoder.sentence_embeddings([class_prompt(n) for n in self.class_names])
        return (q @ c.T).float().cpu()

    def scores(self, queries: Sequence[str], posterior: Tensor) -> Tensor:
        """``(Q, N)`` bridge scores (higher = better match) for shapes with class posteriors ``(N, 40)``."""
        return self.query_class_similarity(queries) @ posterior.T


# --------------------------------------------------------------------------- real shapes (shared, dev only)

@dataclass
class RealShapes:
    """ids, clouds ``(2048, 3)`` (ShapeNet's coordinates: y-up, NOT unit-sphere normalised) and classes."""

    ids: list[str]
    clouds: list[np.ndarray]
    classes: list[str]


def load_real_shapes(root: str | os.PathLike | None = None) -> RealShapes | None:
    """The real ShapeNet development clouds of ``<shared>/data/real_shapes_dev``; None when absent.

    ShapeNet's terms apply (research and education): they are read in place, never copied.
    """
    from h2arn.paths import shared_dir

    if root is None:
        base = shared_dir()
        if base is None:
            return None
        root = base / "data" / "real_shapes_dev"
    root = Path(root)
    if not (root / "clouds.npz").is_file() or not (root / "classes.json").is_file():
        return None
    classes = json.loads((root / "classes.json").read_text(encoding="utf-8"))
    with np.load(root / "clouds.npz") as data:
        ids = sorted(data.files)
        clouds = [np.asarray(data[k], dtype=np.float32) for k in ids]
    return RealShapes(ids, clouds, [classes[k] for k in ids])


# Query sets for the 10 classes of real_shapes_dev: (query, classes it is about). Written for this
# measurement and fixed before any number was looked at; abstract queries name a super-class.
REAL_SHAPE_QUERIES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "class name": [(class_prompt(c), (c,)) for c in
                   ("aeroplane", "bathtub", "bench", "bottle", "chair", "cup", "piano", "rifle", "toilet", "vase")],
    "paraphrase": [
        ("a jet with two wings and a tail", ("aeroplane",)),
        ("a tub you fill with water to take a bath", ("bathtub",)),
        ("a long seat for several people in a park", ("bench",)),
        ("a narrow-necked container for drinks", ("bottle",)),
        ("a seat with a backrest and four legs", ("chair",)),
        ("a small mug with a handle for coffee", ("cup",)),
        ("a keyboard instrument with black and white keys", ("piano",)),
        ("a long gun with a stock and a barrel", ("rifle",)),
        ("a porcelain bowl with a seat and a flush tank", ("toilet",)),
        ("a decorative pot for flowers", ("vase",)),
    ],
    "abstract": [
        ("a vessel", ("bottle", "cup", "vase")),
        ("a piece of furniture", ("bench", "chair", "piano")),
        ("something to sit on", ("bench", "chair")),
        ("a bathroom fixture", ("bathtub", "toilet")),
        ("a vehicle", ("aeroplane",)),
        ("a weapon", ("rifle",)),
        ("a container for liquids", ("bottle", "cup", "vase")),
        ("a musical instrument", ("piano",)),
    ],
}


def map_by_query_type(scores_of: dict[str, Tensor], shapes: RealShapes,
                      queries: dict[str, list[tuple[str, tuple[str, ...]]]] = REAL_SHAPE_QUERIES,
                      n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """mAP per (method, query type) with a 95% bootstrap interval over queries and the chance level.

    ``scores_of``: method name -> ``(Q, N)`` scores for the queries of ``queries`` flattened in order
    (type by type), over ``shapes``. Chance = mean over the type's queries of the exact expected AP of a
    random ranking (:func:`h2arn.evaluate.chance_average_precision`).
    """
    from h2arn.evaluate import average_precision, chance_average_precision

    labels = np.asarray(shapes.classes)
    flat = [(t, q, cls) for t, qs in queries.items() for q, cls in qs]
    relevant = torch.as_tensor(np.stack([np.isin(labels, cls) for _, _, cls in flat]))
    rng = np.random.default_rng(seed)
    rows = []
    for method, scores in scores_of.items():
        if scores.shape != relevant.shape:
            raise ValueError(f"{method}: scores {tuple(scores.shape)} but {tuple(relevant.shape)} (queries x shapes)")
        ap = average_precision(scores, relevant).numpy()
        for t in queries:
            sel = np.array([i for i, (tt, _, _) in enumerate(flat) if tt == t])
            vals = ap[sel]
            boot = vals[rng.integers(0, len(vals), size=(n_boot, len(vals)))].mean(1)
            chance = float(np.mean([float(chance_average_precision(int(relevant[i].sum()), len(labels))) for i in sel]))
            rows.append({"method": method, "query type": t, "n_queries": len(vals), "mAP": float(vals.mean()),
                         "ci_low": float(np.quantile(boot, 0.025)), "ci_high": float(np.quantile(boot, 0.975)),
                         "chance": chance})
    return rows


def query_list(queries: dict[str, list[tuple[str, tuple[str, ...]]]] = REAL_SHAPE_QUERIES) -> list[str]:
    """The query texts of ``queries``, flattened type by type (the row order of :func:`map_by_query_type`)."""
    return [q for qs in queries.values() for q, _ in qs]


def paired_map_difference(scores_a: Tensor, scores_b: Tensor, shapes: RealShapes,
                          queries: dict[str, list[tuple[str, tuple[str, ...]]]] = REAL_SHAPE_QUERIES,
                          n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per query type: mean of ``AP_a - AP_b`` over the SAME queries, with a 95% bootstrap interval (paired)."""
    from h2arn.evaluate import average_precision

    labels = np.asarray(shapes.classes)
    flat = [(t, cls) for t, qs in queries.items() for _, cls in qs]
    relevant = torch.as_tensor(np.stack([np.isin(labels, cls) for _, cls in flat]))
    diff = (average_precision(scores_a, relevant) - average_precision(scores_b, relevant)).numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for t in queries:
        vals = diff[[i for i, (tt, _) in enumerate(flat) if tt == t]]
        boot = vals[rng.integers(0, len(vals), size=(n_boot, len(vals)))].mean(1)
        rows.append({"query type": t, "n_queries": len(vals), "mean_diff": float(vals.mean()),
                     "ci_low": float(np.quantile(boot, 0.025)), "ci_high": float(np.quantile(boot, 0.975))})
    return rows
