"""Caption grammar: one caption per level of the taxonomy, from "a piece of furniture" to one armchair.

Why levels: H2ARN's hierarchical loss and the HRC chapter need texts that sit at known depths of the
is-a tree, and a hierarchy-aware evaluation needs to know which shapes a caption truly describes. Each
shape gets one caption per level (:data:`LEVELS`):

=====  ============================  ===========================================================
level  names                         example (its ``node`` / named attributes)
=====  ============================  ===========================================================
0      the super-category            "some kind of furniture item."      (furniture)
1      the mid-category              "this is a seat."                   (furniture > seat)
2      the category (basic level)    "a chair."                          (... > chair)
3      the leaf                      "it is an armchair."                (... > chair > armchair)
4      leaf + named attributes       "a tall blue armchair."             (armchair, color=blue, ...)
5      the instance                  "a tall blue fabric armchair with armrests on both sides and
                                      four thick legs."                   (this shape only)
=====  ============================  ===========================================================

Every caption comes with its **target**: ``node`` (the taxonomy path prefix it names) and ``named``
(the attribute values it states). A shape *satisfies* a caption when its path starts with ``node`` and
its attributes equal ``named`` (level 5: only the shape itself, and any shape with the identical text),
which is what :mod:`h2arn.data.relevance` turns into graded relevance. Whole-to-part phrases ("a narrow
neck") are tied to part ids in ``metadata.json`` and make up the instance captions.

The vocabulary and templates are curated by hand from the phrasing of the real Text2Shape (tables) and
ShapeGlot (chairs) captions ("a table with four legs.", "this is a ... it has ...", "the chair has ...",
lower case, occasional missing full stop and typo). They are baked in here so generation never depends on
``../shared``; ``caption_statistics`` lets a test and the notebook compare them with the real captions.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from .shapes import ShapeSpec, count_word
from .taxonomy import DISPLAY, leaf_path

LEVELS = {0: "super-category", 1: "mid-category", 2: "category", 3: "leaf", 4: "leaf + attributes",
          5: "instance"}
INSTANCE_LEVEL = 5
TYPO_RATE = 0.03
CAPITALISE_RATE = 0.2


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------- attribute words

def attribute_words(category: str, attrs: Dict) -> List[Tuple[str, str]]:
    """Pre-noun adjectives in natural order (size, colour, material) with the attribute each one states:
    ``[("height", "tall"), ("color", "blue"), ("material", "ceramic")]``."""
    out: List[Tuple[str, str]] = []
    if attrs.get("height") in ("tall", "short") and category not in ("chair", "stool", "lamp"):
        out.append(("height", attrs["height"]))
    if attrs.get("size") in ("long", "short"):
        out.append(("size", attrs["size"]))
    if attrs.get("depth"):
        out.append(("depth", attrs["depth"]))
    if attrs.get("pattern") == "blue and white":
        out.append(("pattern", "blue and white"))
    elif attrs.get("pattern") == "striped":
        out += [("pattern", "striped"), ("color", attrs["color"])]
    elif attrs.get("color"):
        out.append(("color", attrs["color"]))
    if attrs.get("material"):
        out.append(("material", attrs["material"]))
    return out


def adjectives(category: str, attrs: Dict) -> List[str]:
    """The words of :func:`attribute_words` (kept for callers that only want text)."""
    return [w for _, w in attribute_words(category, attrs)]


def noun(node: str, rng) -> str:
    return _pick(rng, DISPLAY[node])


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

NODE_TEMPLATES = ["{a_x}.", "some kind of {x}.", "it is {a_x}.", "{a_x}", "this is {a_x}.", "looks like {a_x}.",
                  "a simple {x}.", "a plain {x}"]
ATTR_TEMPLATES = ["{a_adj_noun}.", "{a_adj_noun}", "this is {a_adj_noun}.", "it is {a_adj_noun}."]
INSTANCE_TEMPLATES = [
    "{a_adjs_noun} with {fs}.",
    "this is {a_adjs_noun}. it has {fs}.",
    "{adjs_noun} with {fs}",
    "it is {a_noun} made of {material}. it is {color} and has {fs}.",
    "{a_noun} that has {fs}. the {noun} is {color}.",
    "{a_adjs_noun}. the {noun} has {fs}.",
]
MATERIAL_NOUN = {"wooden": "wood", "ceramic": "ceramic", "porcelain": "porcelain", "glass": "glass", "metal": "metal",
                 "bronze": "bronze", "stone": "stone", "jade": "jade", "plastic": "plastic", "fabric": "fabric"}


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
    if level >= 4 and rng.random() < TYPO_RATE:
        text = _typo(text, rng)
    if rng.random() < CAPITALISE_RATE:
        text = text[:1].upper() + text[1:]
    return text


def _caption(level: int, text: str, path: Sequence[str], named: Dict | None = None) -> Dict:
    """One caption with its target: the path prefix it names and the attribute values it states."""
    node = list(path[:level + 1]) if level <= 3 else list(path)
    return {"level": level, "text": text, "node": node, "named": dict(named or {})}


def node_captions(path: Sequence[str], rng: np.random.Generator, levels: Sequence[int] = (0, 1, 2, 3)) -> List[Dict]:
    """Captions that name one node of ``path`` (super, mid, category, leaf) each: "some kind of seat."."""
    out = []
    for level in levels:
        x = noun(path[level], rng)
        text = _pick(rng, NODE_TEMPLATES).format(x=x, a_x=with_article(x))
        out.append(_caption(level, _finish(text, level, rng), path))
    return out


def object_captions(spec: ShapeSpec, rng: np.random.Generator, levels: Sequence[int] = tuple(LEVELS)) -> List[Dict]:
    """One caption per requested level for an artefact spec (dicts with level, text, node, named)."""
    leaf = spec.attributes["leaf"]
    path = leaf_path(leaf)
    out = node_captions(path, rng, [lv for lv in levels if lv <= 3])
    nn = noun(leaf, rng)
    words = [(k, w) for k, w in attribute_words(spec.category, spec.attributes) if w not in nn.split()]
    feats = object_features(spec)
    if 4 in levels:  # one or two attributes, stated exactly (relevance needs to know which)
        k = 1 + int(rng.integers(min(2, len(words)))) if words else 0
        picks = sorted(rng.choice(len(words), size=k, replace=False).tolist()) if k else []
        named = {words[i][0]: spec.attributes[words[i][0]] for i in picks}
        adj_noun = " ".join([words[i][1] for i in picks] + [nn])
        text = _pick(rng, ATTR_TEMPLATES).format(a_adj_noun=with_article(adj_noun))
        out.append(_caption(4, _finish(text, 4, rng), path, named))
    if INSTANCE_LEVEL in levels:  # everything: adjectives, leaf noun and whole-to-part phrases
        color = "blue and white" if spec.attributes.get("pattern") == "blue and white" else spec.attributes.get("color", "plain")
        material = spec.attributes.get("material", "wood")
        n_feat = min(len(feats), 1 + int(rng.integers(3)))
        chosen = [feats[i] for i in sorted(rng.choice(len(feats), size=n_feat, replace=False).tolist())] if feats \
            else ["a simple shape"]
        adjs_noun = " ".join([w for _, w in words] + [nn])
        text = _pick(rng, INSTANCE_TEMPLATES).format(
            a_adjs_noun=with_article(adjs_noun), adjs_noun=adjs_noun, fs=_join(chosen), a_noun=with_article(nn),
            noun=nn, color=color, material=MATERIAL_NOUN.get(material, material))
        out.append(_caption(INSTANCE_LEVEL, _finish(text, INSTANCE_LEVEL, rng), path))
    return out


# --------------------------------------------------------------------------- scenes

def _count_phrase(category: str, k: int, rng) -> str:
    names = {"chair": "chairs", "table": "tables", "bookcase": "bookcases", "board": "boards", "sofa": "sofas",
             "cabinet": "cabinets", "lamp": "lamps", "cup": "cups", "bottle": "bottles", "bowl": "bowls",
             "vase": "vases", "stool": "stools", "jar": "jars", "bench": "benches", "toilet": "toilets",
             "bathtub": "bathtubs", "piano": "pianos", "coffee table": "coffee tables"}
    single = {"bookcase": "bookcase", "board": "whiteboard", "sofa": "sofa", "cabinet": "cabinet"}
    if k == 1:
        word = single.get(category, DISPLAY.get(category, [category])[0])
        return with_article(word)
    if k > 7:
        return f"many {names.get(category, category + 's')}"
    return f"{count_word(k)} {names.get(category, category + 's')}"


def scene_captions(leaf: str, attrs: Dict, rng: np.random.Generator, levels: Sequence[int] = tuple(LEVELS)) -> List[Dict]:
    """One caption per requested level for a room of ``leaf`` (``attrs`` from ``scenes.build_room``)."""
    path = leaf_path(leaf)
    out = node_captions(path, rng, [lv for lv in levels if lv <= 3])
    room = noun(leaf, rng)
    objs = attrs["objects"]
    ranked = sorted(objs.items(), key=lambda kv: (-kv[1], kv[0]))
    phrases = [_count_phrase(c, k, rng) for c, k in ranked]
    a_room = with_article(room)
    if 4 in levels:
        options = [("wall_color", "{a_room} with {v} walls."), ("floor_color", "{a_room} with a {v} floor.")]
        if attrs["size"] != "medium":
            options.append(("size", "{a_v_room}."))
        key, tmpl = options[int(rng.integers(len(options)))]
        v = attrs[key]
        text = tmpl.format(a_room=a_room, v=v, a_v_room=with_article(f"{v} {room}"))
        out.append(_caption(4, _finish(text, 4, rng), path, {key: v}))
    if INSTANCE_LEVEL in levels:
        if phrases:
            text = _pick(rng, [
                "{a_size_room} with {ps}. the walls are {wall}.",
                "this is {a_size_room}. it has {ps}. the floor is {floor}.",
                "{a_room} with {wall} walls, {ps}",
                "{a_size_room} that has {ps}, the floor is {floor}.",
            ]).format(a_size_room=with_article(f"{attrs['size']} {room}" if attrs["size"] != "medium" else room),
                      ps=_join(phrases[:4]), wall=attrs["wall_color"], floor=attrs["floor_color"], a_room=a_room)
        else:
            text = f"an empty {attrs['size']} {room} with {attrs['wall_color']} walls and a {attrs['floor_color']} floor."
        out.append(_caption(INSTANCE_LEVEL, _finish(text, INSTANCE_LEVEL, rng), path))
    return out


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
