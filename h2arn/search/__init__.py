r"""Text-to-shape search over a trained model: embed a query, rank a gallery, explain the ranking.

Two entry points, one ranking:

* :class:`Retriever` (scripts, the command line): ``Retriever.from_run(model_file)`` loads a trained model
  **and** the text and point encoders its features were made with (the model file records them, see
  :func:`h2arn.extract.feature_settings`); :meth:`Retriever.add_shapes` embeds your own meshes, point-cloud
  files or arrays (read by :mod:`h2arn.meshes`, point tokens cached on disk by file content);
  :meth:`Retriever.search` / :meth:`Retriever.search_many` return ranked ids, distances and the per-token
  contribution weights of the query and of each hit (the model's explanation). Large galleries are
  searched through :class:`h2arn.index.LorentzIndex`.
* :class:`RetrievalSession` (the course's widgets, :mod:`h2arn.course.widgets`): a trained model and a
  test-split gallery with its captions, for the Poincaré-disk and contribution pictures of chapter 08;
  :meth:`Retriever.session` turns your own gallery into one.

Command line (``python -m h2arn.search -h``)::

    python -m h2arn.search index --model build/runs/ci/h2arn-s0/best_model.pth --shapes my_meshes/ --out build/gallery [--up z]
    python -m h2arn.search query --gallery build/gallery "a tall vase with two handles" --k 10 [--json] [--html out.html]

Distances are the model's own: Lorentz geodesic distance at the learned curvature (``-model.similarity``)
for hyperbolic models, cosine distance ``1 - cos`` for the Euclidean baseline.

One job per module; everything public is re-exported here (``from h2arn.search import Retriever``):

* :mod:`~h2arn.search.retriever`: :class:`Retriever`, :class:`Hit`, :class:`QueryResult` (the search API);
* :mod:`~h2arn.search.gallery`: the gallery folder on disk (:class:`Gallery`, :func:`read_gallery_meta`);
* :mod:`~h2arn.search.recorded`: rebuilding the encoders a model file records;
* :mod:`~h2arn.search.session`: :class:`RetrievalSession`, :func:`session_from_run`, :func:`search`;
* :mod:`~h2arn.search.explain`: contribution weights per token, per point and per word piece;
* :mod:`~h2arn.search.html`: the ``--html`` result page; :mod:`~h2arn.search.cli`: the command line;
* :mod:`~h2arn.search.errors`: :class:`SearchError`.
"""
from __future__ import annotations

# __all__ is the list of before the split; the gallery constants, build_parser, read_gallery_meta, write_html and
# word_pieces stay importable from here too, as they were from the single module.
from .cli import build_parser, main
from .errors import SearchError
from .explain import contribution_map, effective_number, redundancy_share, text_contributions, token_assignment
from .gallery import (ARRAYS_FILE, GALLERY_FILE, GALLERY_FORMAT, GALLERY_VERSION, INDEX_FILE, Gallery,
                      read_gallery_meta)
from .html import write_html
from .retriever import CACHE_VERSION, INDEX_AUTO_MIN, Hit, QueryResult, Retriever
from .session import RetrievalSession, SearchResult, encode_query, search, session_from_run, word_pieces

__all__ = ["SearchError", "Hit", "QueryResult", "Gallery", "Retriever", "main", "SearchResult", "RetrievalSession", "session_from_run", "encode_query", "search", "token_assignment", "contribution_map",
           "redundancy_share", "effective_number", "text_contributions"]
