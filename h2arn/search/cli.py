r"""The command line ``python -m h2arn.search index|query`` over :class:`~h2arn.search.retriever.Retriever`.

Why a module of its own: flags, printing and exit codes are the shell's concern; the search itself lives in
:mod:`h2arn.search.retriever`. ``__main__.py`` only calls :func:`main` (kept apart so that importing
:mod:`h2arn.search` never imports ``__main__``). A bad input is one line and exit code 2
(:func:`h2arn.cli.run_cli`)::

    python -m h2arn.search index --model build/runs/ci/h2arn-s0/best_model.pth --shapes my_meshes/ --out build/gallery [--up z]
    python -m h2arn.search query --gallery build/gallery "a tall vase with two handles" --k 10 [--json] [--html out.html]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import SearchError
from .gallery import read_gallery_meta
from .html import write_html
from .retriever import INDEX_AUTO_MIN, Retriever


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m h2arn.search", description="Search your own 3-D shapes by text.")
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="embed a folder of meshes/clouds into a gallery folder")
    ix.add_argument("--model", required=True, help="model file (best_model.pth) or run folder")
    ix.add_argument("--shapes", required=True, nargs="+", help="files and/or folders (searched recursively)")
    ix.add_argument("--out", required=True, help="gallery folder to write (replaced atomically)")
    ix.add_argument("--up", default="y", choices=["y", "z"], help="the shapes' up axis (the benchmark is y-up)")
    ix.add_argument("--index", default="auto", choices=["auto", "none", "flat", "hnsw", "ivf"],
                    help=f"FAISS index (h2arn.index); auto = hnsw from {INDEX_AUTO_MIN} shapes on")
    ix.add_argument("--pc_weights", default=None, help="point-encoder weights, if not where training recorded them")
    ix.add_argument("--cache", default=None, help="token cache folder (default build/cache/shape_tokens)")
    ix.add_argument("--device", default="auto")
    q = sub.add_parser("query", help="search a gallery folder with free text")
    q.add_argument("--gallery", required=True)
    q.add_argument("text", nargs="+", help="one or more queries")
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--model", default=None, help="default: the model file the gallery was indexed with")
    q.add_argument("--json", action="store_true", help="print machine-readable results")
    q.add_argument("--html", default=None, help="write a page with thumbnails, distances and token weights")
    q.add_argument("--device", default="auto")
    return p


def _run(args) -> int:
    if args.command == "index":
        r = Retriever.from_run(args.model, args.device, pc_weights=args.pc_weights, cache_dir=args.cache)
        ids = r.add_shapes(args.shapes, up=args.up)
        out = r.save_gallery(args.out, index=args.index)
        print(f"gallery {out}: {len(ids)} shapes embedded with {r.model_file}")
        return 0
    if args.k < 1:
        raise SearchError(f"--k {args.k}: must be a positive integer.")
    meta = read_gallery_meta(args.gallery)
    r = Retriever.from_run(args.model or meta["model_file"], args.device, progress=False)
    r.load_gallery(args.gallery)
    results = r.search_many(args.text, args.k)
    if args.html:
        write_html(results, r, args.html)
    if args.json:
        print(json.dumps([res.to_dict() for res in results], indent=1))
    else:
        for res in results:
            print(f"query: {res.query!r}")
            for h in res.hits:
                print(f"  #{h.rank:<3d} {h.id:40s} d = {h.distance:.4f}   {h.path or ''}")
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from h2arn.checkpoint import CheckpointError
    from h2arn.cli import run_cli
    from h2arn.encoders.text import TextEncoderError
    from h2arn.encoders.weights import CheckpointError as WeightsError
    from h2arn.features import FeatureError
    from h2arn.meshes import ShapeReadError

    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args),
                   (SearchError, ShapeReadError, CheckpointError, WeightsError, TextEncoderError, FeatureError))
