"""The taxonomy of the generated benchmark (v4): subset > super-category > mid-category > category > leaf.

Why a fixed, explicit, deep tree: H2ARN's claim is that hyperbolic space holds an is-a hierarchy better
than Euclidean space, which can only show when the hierarchy is deep and wide enough for volume to
matter. Every shape therefore sits **four is-a levels** below its subset (WordNet/ShapeNet-style synset
names: furniture > seat > chair > armchair; vessel > container > bottle > wine bottle; rooms the same
way, workspace > meeting space > conferenceRoom > boardroom), and every caption names one node of that
path (or, below the leaf, attributes or the whole instance).

Names:

* **category** = the basic level (ShapeNet / ModelNet40 / S3DIS class: ``chair``, ``bottle``,
  ``conferenceRoom``); it stays ``meta["category"]`` as before, so code that groups by category keeps working;
* **leaf** = the finest is-a class (``armchair``), ``meta["leaf"]``; ``meta["taxonomy_path"]`` is
  ``[super, mid, category, leaf]``.

Caption levels (``LEVELS`` in :mod:`h2arn.data.captions`): 0 super-category, 1 mid-category, 2 category,
3 leaf, 4 leaf + named attributes, 5 the instance (whole-to-part description).

The two halves mirror T3DR-HIT v2: ``Elephant`` (single objects) and ``S3DIS`` (indoor rooms). S3DIS spells
rooms in camelCase (``conferenceRoom``); ``DISPLAY`` gives the words used in captions.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

# subset -> super-category -> mid-category -> category (basic level) -> leaves
TREE: Dict[str, Dict[str, Dict[str, Dict[str, List[str]]]]] = {
    "Elephant": {
        "vessel": {
            "container": {"bottle": ["wine bottle", "water bottle"], "jar": ["ginger jar", "storage jar"],
                          "bowl": ["serving bowl", "footed bowl"]},
            "drinking vessel": {"cup": ["mug", "teacup"]},
            "ornamental vessel": {"vase": ["amphora", "flower vase"], "ding": ["tripod ding", "square ding"]},
        },
        "furniture": {
            "seat": {"chair": ["armchair", "side chair"], "stool": ["bar stool", "footstool"],
                     "bench": ["park bench", "backless bench"]},
            "table": {"dining table": ["round dining table", "rectangular dining table"],
                      "coffee table": ["round coffee table", "square coffee table"]},
        },
        "fixture": {
            "plumbing fixture": {"bathtub": ["clawfoot bathtub", "built-in bathtub"],
                                 "toilet": ["close-coupled toilet", "wall-hung toilet"]},
            "lighting fixture": {"lamp": ["floor lamp", "desk lamp"]},
        },
        "device": {
            "musical instrument": {"piano": ["grand piano", "upright piano"]},
            "weapon": {"rifle": ["hunting rifle", "assault rifle"]},
        },
        "vehicle": {
            "aircraft": {"airplane": ["airliner", "propeller plane"]},
        },
    },
    "S3DIS": {
        "workspace": {
            "work room": {"office": ["private office", "shared office"], "copyRoom": ["photocopy room", "print room"]},
            "meeting space": {"conferenceRoom": ["boardroom", "seminar room"],
                              "auditorium": ["lecture hall", "assembly hall"]},
        },
        "circulation": {
            "passage": {"hallway": ["corridor", "gallery hallway"]},
            "entrance area": {"lobby": ["entrance lobby", "waiting area"]},
        },
        "service": {
            "utility room": {"storage": ["shelf storeroom", "cabinet storeroom"]},
            "sanitary room": {"WC": ["restroom", "washroom"]},
        },
        "gathering": {
            "break room": {"pantry": ["kitchenette", "dining pantry"], "lounge": ["sofa lounge", "reading lounge"]},
        },
    },
}

# the five named levels of a shape's path below its subset (level index = caption level for 0..3)
PATH_LEVELS = ("super_category", "mid_category", "category", "leaf")

# words used in captions for each node (several synonyms each; a synonym never names another node)
DISPLAY: Dict[str, List[str]] = {
    # Elephant: super / mid
    "vessel": ["vessel", "receptacle"], "container": ["container", "storage vessel"],
    "drinking vessel": ["drinking vessel", "vessel for drinking"],
    "ornamental vessel": ["ornamental vessel", "decorative vessel"],
    "furniture": ["piece of furniture", "furniture item"], "seat": ["seat", "piece of seating"],
    "table": ["table", "kind of table"],
    "fixture": ["fixture", "fitting"], "plumbing fixture": ["plumbing fixture", "sanitary fixture"],
    "lighting fixture": ["light fixture", "lighting object"],
    "device": ["device", "piece of equipment"], "musical instrument": ["musical instrument", "instrument for music"],
    "weapon": ["weapon", "armament"], "vehicle": ["vehicle", "means of transport"], "aircraft": ["aircraft", "flying craft"],
    # Elephant: categories
    "bottle": ["bottle"], "jar": ["jar", "pot"], "bowl": ["bowl"], "cup": ["cup", "drinking cup"], "vase": ["vase"],
    "ding": ["ding", "bronze cauldron", "ritual cauldron"], "chair": ["chair"], "stool": ["stool"],
    "bench": ["bench"], "dining table": ["dining table"], "coffee table": ["coffee table", "low table"],
    "bathtub": ["bathtub", "bath tub"], "toilet": ["toilet", "toilet bowl"], "lamp": ["lamp"],
    "piano": ["piano"], "rifle": ["rifle", "long gun"], "airplane": ["airplane", "aeroplane", "plane"],
    # Elephant: leaves
    "wine bottle": ["wine bottle"], "water bottle": ["water bottle"], "ginger jar": ["ginger jar"],
    "storage jar": ["storage jar"], "serving bowl": ["serving bowl"], "footed bowl": ["footed bowl"],
    "mug": ["mug", "coffee mug"], "teacup": ["teacup", "tea cup"], "amphora": ["amphora"],
    "flower vase": ["flower vase"], "tripod ding": ["tripod ding", "three-legged ding"],
    "square ding": ["square ding", "four-legged ding"], "armchair": ["armchair", "arm chair"],
    "side chair": ["side chair", "dining chair"], "bar stool": ["bar stool"], "footstool": ["footstool"],
    "park bench": ["park bench", "garden bench"], "backless bench": ["backless bench", "plank bench"],
    "round dining table": ["round dining table"], "rectangular dining table": ["rectangular dining table"],
    "round coffee table": ["round coffee table"], "square coffee table": ["square coffee table"],
    "clawfoot bathtub": ["clawfoot bathtub", "clawfoot tub"], "built-in bathtub": ["built-in bathtub", "alcove tub"],
    "close-coupled toilet": ["close-coupled toilet", "toilet with a cistern"],
    "wall-hung toilet": ["wall-hung toilet", "wall-mounted toilet"], "floor lamp": ["floor lamp", "standard lamp"],
    "desk lamp": ["desk lamp", "table lamp"], "grand piano": ["grand piano"], "upright piano": ["upright piano"],
    "hunting rifle": ["hunting rifle", "scoped rifle"], "assault rifle": ["assault rifle"],
    "airliner": ["airliner", "jet airliner"], "propeller plane": ["propeller plane", "prop plane"],
    # S3DIS: super / mid
    "workspace": ["workspace", "place of work"], "work room": ["work room", "working room"],
    "meeting space": ["meeting space", "space for meetings"], "circulation": ["circulation area", "transit space"],
    "passage": ["passage", "passageway"], "entrance area": ["entrance area", "entry space"],
    "service": ["service room", "service space"], "utility room": ["utility room", "back room"],
    "sanitary room": ["sanitary room", "hygiene room"], "gathering": ["gathering room", "common room"],
    "break room": ["break room", "rest area"],
    # S3DIS: categories
    "office": ["office"], "copyRoom": ["copy room", "reprographics room"],
    "conferenceRoom": ["conference room", "meeting room"], "auditorium": ["auditorium", "hall"],
    "hallway": ["hallway"], "lobby": ["lobby", "foyer"], "storage": ["storage room", "store room"],
    "WC": ["WC", "lavatory"], "pantry": ["pantry", "kitchen"], "lounge": ["lounge", "lounge room"],
    # S3DIS: leaves
    "private office": ["private office", "single office"], "shared office": ["shared office", "open office"],
    "photocopy room": ["photocopy room", "copier room"], "print room": ["print room", "printing room"],
    "boardroom": ["boardroom", "board room"], "seminar room": ["seminar room", "classroom"],
    "lecture hall": ["lecture hall", "lecture theatre"], "assembly hall": ["assembly hall", "event hall"],
    "corridor": ["corridor", "narrow corridor"], "gallery hallway": ["gallery hallway", "exhibition hallway"],
    "entrance lobby": ["entrance lobby", "entrance hall"], "waiting area": ["waiting area", "waiting room"],
    "shelf storeroom": ["shelf storeroom", "archive room"], "cabinet storeroom": ["cabinet storeroom", "supply room"],
    "restroom": ["restroom", "public restroom"], "washroom": ["washroom", "bathroom"],
    "kitchenette": ["kitchenette", "tea kitchen"], "dining pantry": ["dining pantry", "staff canteen"],
    "sofa lounge": ["sofa lounge", "sitting room"], "reading lounge": ["reading lounge", "reading room"],
}

# the generic word for the root of each subset
SUBSET_DISPLAY = {"Elephant": "object", "S3DIS": "indoor room"}

# categories that the shared ModelNet40 PointNet also knows (category -> ModelNet40 class name)
MODELNET40_NAMES = {"vase": "vase", "bottle": "bottle", "cup": "cup", "bowl": "bowl", "chair": "chair",
                    "dining table": "table", "coffee table": "table", "stool": "stool", "lamp": "lamp",
                    "bench": "bench", "bathtub": "bathtub", "toilet": "toilet", "piano": "piano",
                    "airplane": "airplane", "jar": "flower_pot"}

# the classes of ../shared/data/real_shapes_dev (their names) -> our category
REAL_CLASSES = {"aeroplane": "airplane", "bathtub": "bathtub", "bench": "bench", "bottle": "bottle",
                "chair": "chair", "cup": "cup", "piano": "piano", "rifle": "rifle", "toilet": "toilet",
                "vase": "vase"}


def _index() -> Dict[str, Tuple[str, str, str, str, str]]:
    out = {}
    for subset, supers in TREE.items():
        for sup, mids in supers.items():
            for mid, cats in mids.items():
                for cat, leaves in cats.items():
                    for leaf in leaves:
                        out[leaf] = (subset, sup, mid, cat, leaf)
    return out


_LEAF_PATH = _index()

# subset -> super-category -> categories (the v3 shape of the tree, kept for callers that group by category)
TAXONOMY: Dict[str, Dict[str, List[str]]] = {
    subset: {sup: [c for mid in mids.values() for c in mid] for sup, mids in supers.items()}
    for subset, supers in TREE.items()
}


def all_leaves(subset: str | None = None) -> List[str]:
    """Every leaf in tree order (``subset`` restricts to one half)."""
    return [leaf for leaf, p in _LEAF_PATH.items() if subset is None or p[0] == subset]


def all_categories(subset: str | None = None) -> List[str]:
    """Every category (basic level) in tree order."""
    subsets = [subset] if subset else list(TREE)
    return [c for s in subsets for mids in TREE[s].values() for cats in mids.values() for c in cats]


def leaf_path(leaf: str) -> Tuple[str, str, str, str]:
    """``(super, mid, category, leaf)`` of a leaf (KeyError naming the known leaves otherwise)."""
    if leaf not in _LEAF_PATH:
        raise KeyError(f"unknown leaf {leaf!r}; known: {all_leaves()}")
    return _LEAF_PATH[leaf][1:]


def subset_of_leaf(leaf: str) -> str:
    return _LEAF_PATH[leaf][0] if leaf in _LEAF_PATH else leaf_path(leaf)[0]


def leaves_of(category: str) -> List[str]:
    return [leaf for leaf, p in _LEAF_PATH.items() if p[3] == category]


def super_category_of(category: str) -> str:
    """The super-category that holds ``category`` (a category or a leaf; KeyError for an unknown one)."""
    for leaf, p in _LEAF_PATH.items():
        if category in (p[3], leaf):
            return p[1]
    raise KeyError(f"unknown category {category!r}; known: {all_categories()}")


def subset_of(category: str) -> str:
    for leaf, p in _LEAF_PATH.items():
        if category in (p[3], leaf):
            return p[0]
    raise KeyError(f"unknown category {category!r}")


def select_leaves(leaves: Optional[Sequence[str] | int] = None, subset: str | None = None) -> List[str]:
    """The leaves a generation uses: all (``None``), a list of names, or the first ``k`` per subset taken
    round-robin over super-categories (so a smaller benchmark stays as wide as possible)."""
    if leaves is None:
        return all_leaves(subset)
    if not isinstance(leaves, int):
        unknown = [x for x in leaves if x not in _LEAF_PATH]
        if unknown:
            raise KeyError(f"unknown leaves {unknown}; known: {all_leaves()}")
        return [x for x in all_leaves(subset) if x in set(leaves)]
    out: List[str] = []
    for s in ([subset] if subset else list(TREE)):
        by_sup = [[x for x in all_leaves(s) if _LEAF_PATH[x][1] == sup] for sup in TREE[s]]
        picked: List[str] = []
        while len(picked) < min(leaves, len(all_leaves(s))):
            for group in by_sup:
                if group and len(picked) < leaves:
                    picked.append(group.pop(0))
        out += [x for x in all_leaves(s) if x in set(picked)]
    return out


def taxonomy_depth() -> int:
    """Is-a levels above the instance (super, mid, category, leaf = 4)."""
    return len(PATH_LEVELS)


def taxonomy_tree(leaves: Optional[Sequence[str]] = None) -> dict:
    """The tree as nested JSON-ready dicts: ``{"name", "level", "children": [...]}``.

    ``level`` is the caption level a node stands for: root -2, subset -1 (no captions), super-category 0,
    mid-category 1, category 2, leaf 3; attribute captions (4) and instance captions (5) live below, in
    ``metadata.json``. ``leaves`` restricts the tree to the leaves a dataset uses.
    """
    keep = set(leaves) if leaves is not None else set(_LEAF_PATH)

    def node(name, level, children=()):
        return {"name": name, "level": level, "children": [c for c in children if c is not None]}

    def cat_node(cat, leaves_):
        kids = [node(x, 3) for x in leaves_ if x in keep]
        return node(cat, 2, kids) if kids else None

    def mid_node(mid, cats):
        kids = [cat_node(c, ls) for c, ls in cats.items()]
        kids = [k for k in kids if k]
        return node(mid, 1, kids) if kids else None

    def sup_node(sup, mids):
        kids = [mid_node(m, cs) for m, cs in mids.items()]
        kids = [k for k in kids if k]
        return node(sup, 0, kids) if kids else None

    return node("root", -2, [node(subset, -1, [n for n in (sup_node(s, m) for s, m in supers.items()) if n])
                             for subset, supers in TREE.items()])
