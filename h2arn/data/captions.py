"""Caption grammar: from abstract ("a vessel") to specific ("a tall blue vase with two handles").

Why levels: H2ARN's hierarchical loss and the HRC chapter need texts that sit at known depths
of the taxonomy. Each shape gets one caption per level:

=====  ================================  ===============================================
level  describes                         example
=====  ================================  ===============================================
0      the super-category                "some kind of vessel."
1      the category                      "this is a vase."
2      category + one or two attributes  "a tall blue vase."
3      the individual shape              "a tall blue ceramic vase with two handles and a
                                          narrow neck."
=====  ================================  ===============================================

plus whole-to-part phrases ("a narrow neck") tied to part ids (kept in ``metadata.json``).

The vocabulary and templates are curated by hand from the phrasing of the real Text2Shape
(tables) and ShapeGlot (chairs) captions ("a table with four legs.", "this is a ... it has ...",
"the chair has ...", lower case, occasional missing full stop and typo). They are baked in here
so generation never depends on ``../shared``; ``caption_statistics`` lets a test and the notebook
compare the result with the real captions when those are present.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .shapes import ShapeSpec, count_word
from .taxonomy import DISPLAY, super_category_of

LEVELS = {0: "super-category", 1: "category", 2: "category + attributes", 3: "instance"}
TYPO_RATE = 0.03
CAPITALISE_RATE = 0.2


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------- attribute words



def adjectives(category: str, attrs: Dict) -> List[str]:
    """Pre-noun adjectives in natural order (size, colour, material), e.g. ["tall", "blue", "ceramic"]."""
    adj: List[str] = []
    if attrs.get("height") in ("tall", "short") and category not in ("chair",):
        adj.append(attrs["height"])
    if attrs.get("depth"):
        adj.append(attrs["depth"])
    if category == "table":
        adj.append(attrs["top"])
    if attrs.get("kind") == "coffee":
        adj.append("low")
    if attrs.get("pattern") == "blue and white":
        adj.append("blue and white")
    elif attrs.get("pattern") == "striped":
        adj += ["striped", attrs["color"]]
    elif attrs.get("color"):
        adj.append(attrs["color"])
    material = attrs.get("material")
    if material:
        adj.append(material)
    return adj


def noun(category: str, rng) -> str:
    return _pick(rng, DISPLAY[category])


def object_features(spec: ShapeSpec) -> List[str]:
    """Distinctive with-phrases from the parts ("two handles on the sides", "a narrow neck")."""
    return [p.phrase for p in spec.parts if p.phrase]


def part_phrases(spec: ShapeSpec) -> List[Dict]:
    """Whole-to-part descriptions: one entry per named part that has a phrase, with its part id."""
    out = []
    for i, p in enumerate(spec.parts):
        if p.phrase:
            out.append({"part_id": i, "part": p.name, "phrase": p.phrase})
    return out


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- templates

LEVEL0 = ["{a_sup}.", "some kind of {sup}.", "it is {a_sup}.", "{a_sup}", "this is {a_sup}.", "looks like {a_sup}."]
LEVEL1 = ["{a_noun}.", "this is {a_noun}.", "{a_noun}", "it is {a_noun}.", "a simple {noun}.", "a plain {noun}"]
LEVEL2 = ["{a_adj_noun}.", "{a_adj_noun}", "this is {a_adj_noun}.", "{a_noun} with {f1}.", "{a_adj_noun} with {f1}"]
LEVEL3 = [
    "{a_adjs_noun} with {fs}.",
    "this is {a_adjs_noun}. it has {fs}.",
    "{adjs_noun} with {fs}",
    "it is {a_noun} made of {material}. it is {color} and has {fs}.",
    "{a_noun} that has {fs}. the {noun} is {color}.",
    "{a_adjs_noun}. the {noun} has {fs}.",
]


def _typo(text: str, rng) -> str:
    words = text.split(" ")
    long_idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long_idx:
        return text
    i = long_idx[int(rng.integers(len(long_idx)))]
    w = words[i]
    j = int(rng.integers(1, len(w) - 2))
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def _finish(text: str, level: int, rng) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if level >= 2 and rng.random() < TYPO_RATE:
        text = _typo(text, rng)
    if rng.random() < CAPITALISE_RATE:
        text = text[:1].upper() + text[1:]
    return text


def object_captions(spec: ShapeSpec, rng: np.random.Generator) -> List[Tuple[int, str]]:
    """One caption per level 0..3 for an artefact spec: ``[(level, text), ...]``."""
    cat = spec.category
    sup = _pick(rng, DISPLAY[super_category_of(cat)])
    nn = noun(cat, rng)
    adj = [a for a in adjectives(cat, spec.attributes) if a not in nn.split()]  # no "bronze bronze cauldron"
    feats = object_features(spec)
    color = spec.attributes.get("color", "plain")
    if spec.attributes.get("pattern") == "blue and white":
        color = "blue and white"
    material = spec.attributes.get("material", "wood")
    material_noun = {"wooden": "wood", "ceramic": "ceramic", "porcelain": "porcelain", "glass": "glass",
                     "metal": "metal", "bronze": "bronze", "stone": "stone", "jade": "jade", "plastic": "plastic"}
    out = [(0, _finish(_pick(rng, LEVEL0).format(sup=sup, a_sup=with_article(sup)), 0, rng)),
           (1, _finish(_pick(rng, LEVEL1).format(noun=nn, a_noun=with_article(nn)), 1, rng))]
    # level 2: one or two attributes, or one feature
    k = 1 + int(rng.integers(min(2, len(adj)))) if adj else 0
    picks = sorted(rng.choice(len(adj), size=k, replace=False).tolist()) if k else []
    adj_noun = " ".join([adj[i] for i in picks] + [nn])
    f1 = feats[int(rng.integers(len(feats)))] if feats else "a plain shape"
    tmpl = _pick(rng, LEVEL2 if feats else LEVEL2[:3])
    out.append((2, _finish(tmpl.format(a_adj_noun=with_article(adj_noun), a_noun=with_article(nn), f1=f1), 2, rng)))
    # level 3: everything
    n_feat = min(len(feats), 1 + int(rng.integers(3)))
    chosen = [feats[i] for i in sorted(rng.choice(len(feats), size=n_feat, replace=False).tolist())] if feats else [
        "a simple shape"]
    adjs_noun = " ".join(adj + [nn])
    tmpl = _pick(rng, LEVEL3)
    text = tmpl.format(a_adjs_noun=with_article(adjs_noun), adjs_noun=adjs_noun, fs=_join(chosen),
                       a_noun=with_article(nn), noun=nn, color=color,
                       material=material_noun.get(material, material))
    out.append((3, _finish(text, 3, rng)))
    return out


# --------------------------------------------------------------------------- scenes

def _count_phrase(category: str, k: int, rng) -> str:
    names = {"chair": "chairs", "table": "tables", "bookcase": "bookcases", "board": "boards", "sofa": "sofas",
             "cabinet": "cabinets", "lamp": "lamps", "cup": "cups", "bottle": "bottles", "bowl": "bowls",
             "vase": "vases", "stool": "stools", "statue": "statues", "jar": "jars"}
    single = {"bookcase": "bookcase", "board": "whiteboard", "sofa": "sofa", "cabinet": "cabinet"}
    if k == 1:
        word = single.get(category, DISPLAY.get(category, [category])[0])
        return with_article(word)
    if k > 7:
        return f"many {names.get(category, category + 's')}"
    return f"{count_word(k)} {names.get(category, category + 's')}"


def scene_captions(category: str, attrs: Dict, rng: np.random.Generator) -> List[Tuple[int, str]]:
    """One caption per level 0..3 for a room (``attrs`` from ``scenes.build_room``)."""
    sup = _pick(rng, DISPLAY[super_category_of(category)])
    room = noun(category, rng)
    objs = attrs["objects"]
    ranked = sorted(objs.items(), key=lambda kv: (-kv[1], kv[0]))
    phrases = [_count_phrase(c, k, rng) for c, k in ranked]
    a_room = with_article(room)
    level0 = _pick(rng, ["{a_sup}.", "an indoor room.", "a room inside a building.", "it is {a_sup}.",
                         "some kind of {sup}"]).format(a_sup=with_article(sup), sup=sup)
    level1 = _pick(rng, ["{a_room}.", "this is {a_room}.", "{a_room}", "it is {a_room}."]).format(a_room=a_room)
    if phrases:
        level2 = _pick(rng, ["{a_room} with {p}.", "{a_size_room}." if attrs["size"] != "medium" else "{a_room} with {p}",
                             "{a_room} that has {p}"]).format(
            a_room=a_room, p=phrases[0], a_size_room=with_article(f"{attrs['size']} {room}"))
        level3 = _pick(rng, [
            "{a_size_room} with {ps}. the walls are {wall}.",
            "this is {a_size_room}. it has {ps}. the floor is {floor}.",
            "{a_room} with {wall} walls, {ps}",
            "{a_size_room} that has {ps}, the floor is {floor}.",
        ]).format(a_size_room=with_article(f"{attrs['size']} {room}" if attrs["size"] != "medium" else room), ps=_join(phrases[:4]),
                  wall=attrs["wall_color"], floor=attrs["floor_color"], a_room=a_room, size=attrs["size"], room=room)
    else:
        level2 = f"an empty {room}."
        level3 = f"an empty {attrs['size']} {room} with {attrs['wall_color']} walls and a {attrs['floor_color']} floor."
    return [(0, _finish(level0, 0, rng)), (1, _finish(level1, 1, rng)), (2, _finish(level2, 2, rng)),
            (3, _finish(level3, 3, rng))]


def scene_part_phrases(placed, rng=None) -> List[Dict]:
    """Whole-to-part phrases for a room: one per placed object (part id = object index)."""
    out = []
    for i, p in enumerate(placed):
        attrs = p.spec.attributes
        words = [attrs[k] for k in ("color", "material") if isinstance(attrs.get(k), str)]
        name = {"board": "whiteboard"}.get(p.category, DISPLAY.get(p.category, [p.category])[0])
        out.append({"part_id": i, "part": p.category, "phrase": with_article(" ".join(words + [name]))})
    return out


# --------------------------------------------------------------------------- realism statistics

_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def caption_statistics(captions: Iterable[str]) -> Dict:
    """Length percentiles (words) and word frequencies: the numbers compared with real captions."""
    caps = list(captions)
    lengths = np.array([len(tokenize(c)) for c in caps])
    vocab = Counter(w for c in caps for w in tokenize(c))
    return {"n": len(caps), "length_p5_25_50_75_95": np.percentile(lengths, [5, 25, 50, 75, 95]).tolist(),
            "mean_length": float(lengths.mean()) if len(caps) else 0.0, "vocab": vocab}


def load_real_captions(shared_root) -> Dict[str, List[str]]:
    """The shared Text2Shape / ShapeGlot captions (``{"text2shape": [...], "shapeglot": [...]}``).

    Only for realism statistics (tests/notebooks); generation never reads them.
    """
    import json
    from pathlib import Path

    out = {}
    for key in ("text2shape", "shapeglot"):
        caps: List[str] = []
        for split in ("train", "val"):
            path = Path(shared_root) / "data" / "captions" / f"{key}_text_{split}.json"
            if path.is_file():
                d = json.loads(path.read_text(encoding="utf-8"))
                caps += [c for k, v in d.items() if k != "pcs_name" for c in v]
        out[key] = caps
    return out
