"""Generated captions against the real Text2Shape/ShapeGlot captions (skipped when ../shared is absent)."""
from __future__ import annotations

import numpy as np
import pytest

from h2arn.data import generate, load_split
from h2arn.data.captions import caption_statistics, load_real_captions
from h2arn.paths import shared_dir

SHARED = shared_dir()
pytestmark = pytest.mark.skipif(
    SHARED is None or not (SHARED / "data" / "captions").is_dir(),
    reason="shared Text2Shape/ShapeGlot captions not available")


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    root = generate("ci", 0, tmp_path_factory.mktemp("real") / "d", progress=False)
    recs = [r for s in ("train", "val", "test") for r in load_split(root, "Elephant", s)]
    real = load_real_captions(SHARED)
    return recs, {k: caption_statistics(v) for k, v in real.items()}


def test_vocabulary_is_mostly_real_words(stats):
    recs, real = stats
    ours = caption_statistics(c for r in recs for c in r.captions)["vocab"]
    real_vocab = real["text2shape"]["vocab"] + real["shapeglot"]["vocab"]
    covered = sum(n for w, n in ours.items() if w in real_vocab) / sum(ours.values())
    assert covered > 0.9, covered


def test_specific_captions_have_real_lengths(stats):
    recs, real = stats
    specific = [c for r in recs for lvl, c in zip(r.meta["caption_levels"], r.captions) if lvl == 5]
    p = caption_statistics(specific)["length_p5_25_50_75_95"]
    t2s = real["text2shape"]["length_p5_25_50_75_95"]
    # median of our most specific captions lies within the real inter-quantile band [p25, p95]
    assert t2s[1] <= p[2] <= t2s[4], (p, t2s)
    abstract = [c for r in recs for lvl, c in zip(r.meta["caption_levels"], r.captions) if lvl == 0]
    assert np.median([len(c.split()) for c in abstract]) < t2s[1]  # abstract ones are shorter than any usual one
