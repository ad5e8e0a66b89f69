"""Do generated shapes look like real ones? Two numbers in the shared ModelNet40 PointNet's feature space.

Why: a model trained on the generated benchmark only transfers to real objects if the generated clouds
land near real clouds of the same class. The report (``python -m h2arn.data realism``) prints

* **nearest-neighbour class agreement**: for every real ShapeNet cloud of ``../shared/data/real_shapes_dev``
  (10 classes), is its nearest generated *training* cloud (cosine similarity of the PointNet's global
  max-pooled feature) of the same class? Reported for the clouds as stored (with their flagged redundancy)
  and for their salient points only, with the chance level (share of training clouds of the real cloud's
  class, averaged over the real clouds);
* **ModelNet40 top-1**: the PointNet's accuracy on generated shapes of the categories ModelNet40 also has
  (chance 1/40), per category.

Both clouds are normalised the same way (:func:`h2arn.data.shapes.normalize_unit_sphere`, y up, xyz only:
the checkpoint uses no colour). Nothing here trains on the real clouds; they are only read. They did inform the
design of the generated shapes (orientation, parts), so the agreement measured on them is optimistic. When the shared
checkpoint or the real clouds are absent the report says so and exits 0 (it is informational, not a test).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .shapes import normalize_unit_sphere
from .taxonomy import MODELNET40_NAMES, REAL_CLASSES

NUM_POINTS = 1024


def real_shapes_dir() -> Optional[Path]:
    """``<shared>/data/real_shapes_dev`` if present, else ``None``."""
    from ..paths import shared_dir

    root = shared_dir()
    path = root / "data" / "real_shapes_dev" if root is not None else None
    return path if path is not None and (path / "clouds.npz").is_file() else None


def load_real_shapes(path: Path) -> tuple[List[np.ndarray], List[str], List[str]]:
    """``(clouds (N, 3) unit-sphere-normalised, our category per cloud, keys)`` of the real development set."""
    clouds = np.load(path / "clouds.npz")
    classes = json.loads((path / "classes.json").read_text(encoding="utf-8"))
    keys = sorted(clouds.files)
    xyz = [normalize_unit_sphere(np.asarray(clouds[k], np.float64))[0] for k in keys]
    return xyz, [REAL_CLASSES[classes[k]] for k in keys], keys


def input_records(real_dir: Path, checkpoint: Path) -> Dict[str, dict]:
    """Size and hash of the shared files the report reads, so a stored report can be told stale when they change."""
    from ..features import file_record

    return {"real_shapes_dev/clouds.npz": file_record(real_dir / "clouds.npz"),
            "real_shapes_dev/classes.json": file_record(real_dir / "classes.json"),
            "pretrained/" + checkpoint.name: file_record(checkpoint)}


def _features(encoder, clouds: List[np.ndarray], batch: int = 64) -> np.ndarray:
    import torch

    from ..encoders.tokens import downsample_clouds

    prepared = downsample_clouds([torch.as_tensor(c[:, :3], dtype=torch.float32) for c in clouds], NUM_POINTS)
    feats, logits = [], []
    with torch.no_grad():
        for s in range(0, len(prepared), batch):
            x = torch.stack([p if len(p) == NUM_POINTS else p[torch.arange(NUM_POINTS) % len(p)]
                             for p in prepared[s:s + batch]])
            g = encoder.global_feature(x)
            feats.append(g)
            logits.append(encoder.classifier(g))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def realism_report(profile: str = "ci", seed: int = 0, progress: bool = False) -> Dict:
    """The numbers of the module docstring as a dict (``{"skipped": reason}`` when inputs are missing)."""
    from ..encoders.weights import MODELNET40_CLASSES, load_point_encoder, shared_pointnet_path
    from . import ensure_synthetic, load_split

    ckpt = shared_pointnet_path()
    real_dir = real_shapes_dir()
    if ckpt is None or real_dir is None:
        return {"skipped": "the shared ModelNet40 PointNet (<shared>/data/pretrained/pointnet_modelnet40.t7) or the "
                           "real clouds (<shared>/data/real_shapes_dev) are absent; set H2ARN_SHARED to report"}
    encoder, _ = load_point_encoder(ckpt)
    encoder.eval()
    root = ensure_synthetic(profile, seed)
    train = load_split(root, "Elephant", "train")
    gen_cats = np.array([r.meta["category"] for r in train])
    real_xyz, real_cats, _ = load_real_shapes(real_dir)
    real_f, _ = _features(encoder, real_xyz)
    out: Dict = {"profile": profile, "seed": seed, "n_real": len(real_xyz), "n_generated_train": len(train),
                 "real_classes": dict(sorted(Counter(real_cats).items())), "inputs": input_records(real_dir, ckpt)}
    chance = float(np.mean([(gen_cats == c).mean() for c in real_cats]))
    for variant, clouds in (("as stored", [r.points[:, :3] for r in train]),
                            ("salient points only", [r.points[r.extra[:, 1] == 0, :3] for r in train])):
        gen_f, _ = _features(encoder, clouds)
        a = real_f / np.linalg.norm(real_f, axis=1, keepdims=True)
        b = gen_f / np.linalg.norm(gen_f, axis=1, keepdims=True)
        nearest = (a @ b.T).argmax(1)
        hit = gen_cats[nearest] == np.array(real_cats)
        per_class = {c: float(hit[np.array(real_cats) == c].mean()) for c in sorted(set(real_cats))}
        confusions = Counter((c, str(gen_cats[j])) for c, j, h in zip(real_cats, nearest, hit) if not h)
        out[variant] = {"nn_class_agreement": float(hit.mean()), "per_class": per_class,
                        "top_confusions": [f"{c} -> {g} ({n})" for (c, g), n in confusions.most_common(5)]}
    out["nn_chance"] = chance
    # ModelNet40 top-1 on generated shapes of ModelNet40 classes (every split, salient points only and as stored)
    recs = [r for s in ("train", "val", "test") for r in load_split(root, "Elephant", s)
            if r.meta["category"] in MODELNET40_NAMES]
    truth = np.array([MODELNET40_NAMES[r.meta["category"]] for r in recs])
    for variant, clouds in (("as stored", [r.points[:, :3] for r in recs]),
                            ("salient points only", [r.points[r.extra[:, 1] == 0, :3] for r in recs])):
        _, logits = _features(encoder, clouds)
        pred = np.array(MODELNET40_CLASSES)[logits.argmax(1)]
        ok = pred == truth
        out[variant]["modelnet40_top1"] = float(ok.mean())
        out[variant]["modelnet40_per_category"] = {
            c: float(ok[[r.meta["category"] == c for r in recs]].mean()) for c in sorted({r.meta["category"] for r in recs})}
    out["modelnet40_n"] = len(recs)
    return out


def format_report(rep: Dict) -> str:
    """Plain-text lines for the CLI."""
    if "skipped" in rep:
        return f"realism report skipped: {rep['skipped']}"
    lines = [f"h2synth-{rep['profile']} (seed {rep['seed']}): {rep['n_generated_train']} generated training clouds "
             f"(Elephant) vs {rep['n_real']} real ShapeNet clouds {rep['real_classes']}",
             f"feature space: shared ModelNet40 PointNet, global max-pooled feature, cosine; {NUM_POINTS} FPS points"]
    for variant in ("as stored", "salient points only"):
        v = rep[variant]
        lines += [f"[{variant}] real cloud's nearest generated training cloud has its class: "
                  f"{v['nn_class_agreement']:.2f} (chance {rep['nn_chance']:.2f}; ceiling 1.00)",
                  "    per class: " + ", ".join(f"{c} {x:.2f}" for c, x in v["per_class"].items()),
                  "    most frequent confusions: " + ("; ".join(v["top_confusions"]) or "none"),
                  f"[{variant}] ModelNet40 PointNet top-1 on {rep['modelnet40_n']} generated shapes of ModelNet40 "
                  f"classes: {v['modelnet40_top1']:.2f} (chance 0.03)",
                  "    per category: " + ", ".join(f"{c} {x:.2f}" for c, x in v["modelnet40_per_category"].items())]
    return "\n".join(lines)
