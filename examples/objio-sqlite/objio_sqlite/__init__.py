"""objio-sqlite: an example objio backend that keeps objects in one SQLite file.

Installed, ``sqlite://`` URLs work wherever objio takes a path::

    import objio
    ckpt = objio.Checkpoint("sqlite:///data/checkpoints.sqlite/run1", keep_ckpts=3)

It is the backend to copy when you write your own: one entry point, one hook
(:mod:`objio_sqlite.plugin`), one storage class (:mod:`objio_sqlite.storage`), and objio's
conformance suite run in full (``tests/test_sqlite_conformance.py``).
"""
