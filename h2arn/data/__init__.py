"""Data: the embedded hierarchical shape-text benchmark (h2synth) and the T3DR-HIT v2 reader.

Public API (other modules depend on these names):

* :func:`ensure_synthetic` ``(profile="ci", seed=0, root=None, **knobs) -> Path``: build if missing, return the
  root; ``knobs`` = the study knobs of :func:`generate` (leaves, depth, train_per_leaf, redundancy)
* :func:`load_split` ``(dataset_root, subset, split) -> list[ShapeRecord]``; :class:`ShapeRecord`
* :func:`available_subsets`, :func:`load_metadata`, :func:`find_t3drhit`, :class:`DatasetError`
* :mod:`h2arn.data.taxonomy` (the 54-leaf is-a tree), :mod:`h2arn.data.relevance` (which shapes a caption
  describes), :mod:`h2arn.data.redundancy` (flags, per-token shares for the RISD oracle),
  :mod:`h2arn.data.realism` (generated vs real ShapeNet clouds)
* :mod:`h2arn.data.viz`: :func:`plot_cloud`, :func:`draw_examples`

CLI: ``python -m h2arn.data generate --profile ci|full [--seed N] [--out DIR]``, ``info ROOT``, ``realism``.
Conventions: ``data/README.md``.
"""
from .synthetic import PROFILES, default_root, ensure_synthetic, generate
from .t3drhit import (DatasetError, ShapeRecord, available_splits, available_subsets, find_t3drhit,
                      load_metadata, load_split, read_points)
from .viz import draw_examples, plot_cloud

__all__ = ["DatasetError", "ShapeRecord", "PROFILES", "available_splits", "available_subsets", "default_root",
           "draw_examples", "ensure_synthetic", "find_t3drhit", "generate", "load_metadata", "load_split",
           "plot_cloud", "read_points"]
