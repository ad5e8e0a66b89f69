"""``python -m h2arn.search``: runs :func:`h2arn.search.cli.main` (the command line lives there)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
