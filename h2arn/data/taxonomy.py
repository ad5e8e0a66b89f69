"""The taxonomy of the generated benchmark: subset > super-category > category (> attributes).

Why a fixed, explicit tree: the hierarchy-collapse (HRC) chapter needs ground-truth "is-a"
relations to measure how well an embedding space preserves them, and every caption is tagged
with the tree level it describes (0 = super-category, the most abstract, ... 3 = one shape).

The two halves mirror T3DR-HIT v2: ``Elephant`` (single cultural artefacts / objects) and
``S3DIS`` (indoor rooms). Category keys are the words used in file names; ``display`` gives the
words used in captions (S3DIS spells rooms in camelCase, e.g. ``conferenceRoom``).
"""
from __future__ import annotations

from typing import Dict, List

# subset -> super-category -> categories
TAXONOMY: Dict[str, Dict[str, List[str]]] = {
    "Elephant": {
        "vessel": ["vase", "bottle", "cup", "bowl", "jar", "ding"],
        "furniture": ["chair", "table", "stool"],
        "lighting": ["lamp"],
        "sculpture": ["statue", "pagoda", "figurine"],
    },
    "S3DIS": {
        "workspace": ["office", "conferenceRoom", "copyRoom"],
        "circulation": ["hallway", "lobby"],
        "service": ["storage", "pantry", "WC"],
        "gathering": ["lounge", "auditorium"],
    },
}

# words used in captions for super-categories and categories (several synonyms each)
DISPLAY: Dict[str, List[str]] = {
    "vessel": ["vessel", "container"],
    "furniture": ["piece of furniture", "furniture item"],
    "lighting": ["light fixture", "lighting object"],
    "sculpture": ["sculpture", "decorative object"],
    "workspace": ["workspace", "work room"],
    "circulation": ["passage area", "open area"],
    "service": ["service room", "small utility room"],
    "gathering": ["gathering room", "common room"],
    "vase": ["vase"], "bottle": ["bottle"], "cup": ["cup", "mug"], "bowl": ["bowl"],
    "jar": ["jar", "pot"], "ding": ["ding", "bronze cauldron", "ritual cauldron"],
    "chair": ["chair"], "table": ["table"], "stool": ["stool"], "lamp": ["lamp", "floor lamp"],
    "statue": ["statue", "bust"], "pagoda": ["pagoda", "tower"], "figurine": ["elephant figurine", "elephant statue"],
    "office": ["office"], "conferenceRoom": ["conference room", "meeting room"],
    "copyRoom": ["copy room", "printer room"], "hallway": ["hallway", "corridor"], "lobby": ["lobby"],
    "storage": ["storage room", "storeroom"], "pantry": ["pantry", "kitchen"], "WC": ["restroom", "bathroom"],
    "lounge": ["lounge"], "auditorium": ["auditorium", "lecture hall"],
}

# the generic word for the root of each subset (level-0 captions of scenes use it too)
SUBSET_DISPLAY = {"Elephant": "object", "S3DIS": "indoor room"}

# categories that the shared ModelNet40 PointNet also knows (name in ModelNet40)
MODELNET40_NAMES = {"vase": "vase", "bottle": "bottle", "cup": "cup", "bowl": "bowl", "chair": "chair",
                    "table": "table", "stool": "stool", "lamp": "lamp"}


def super_category_of(category: str) -> str:
    """The super-category that holds ``category`` (raises KeyError for an unknown one)."""
    for supers in TAXONOMY.values():
        for sup, cats in supers.items():
            if category in cats:
                return sup
    raise KeyError(f"unknown category {category!r}; known: {all_categories()}")


def subset_of(category: str) -> str:
    for subset, supers in TAXONOMY.items():
        if any(category in cats for cats in supers.values()):
            return subset
    raise KeyError(f"unknown category {category!r}")


def all_categories(subset: str | None = None) -> List[str]:
    subsets = [subset] if subset else list(TAXONOMY)
    return [c for s in subsets for cats in TAXONOMY[s].values() for c in cats]


def taxonomy_tree() -> dict:
    """The tree as nested JSON-ready dicts: ``{"name", "level", "children": [...]}``.

    ``level`` is the caption level a node stands for: root -2, subset -1 (no captions), super-category 0,
    category 1; levels 2 (category + attributes) and 3 (one shape) live below, in ``metadata.json``.
    """
    def node(name, level, children=()):
        return {"name": name, "level": level, "children": list(children)}

    return node("root", -2, [
        node(subset, -1, [node(sup, 0, [node(cat, 1) for cat in cats]) for sup, cats in supers.items()])
        for subset, supers in TAXONOMY.items()
    ])
