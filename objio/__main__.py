"""``python -m objio``: the ``objio`` command line (see :mod:`objio.cli`)."""

from objio.cli import main

raise SystemExit(main())
