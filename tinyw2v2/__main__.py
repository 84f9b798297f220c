"""``python -m tinyw2v2 ...``: the command line (``tinyw2v2.cli``) without an installed entry point."""
from .cli import main

raise SystemExit(main())
