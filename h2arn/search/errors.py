"""The one error of the search package, in its own module so that every part raises and the CLI catches the same class."""
from __future__ import annotations


class SearchError(ValueError):
    """A model, gallery, shape or query cannot be used for search; the message names it and the fix."""
