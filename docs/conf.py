"""Sphinx configuration of objio's documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html``. The ``>>>`` examples of every
page are also tests: pytest collects ``docs/*.rst`` as doctests (see ``docs/conftest.py``).
"""

import objio

project = "objio"
author = "The objio authors"
copyright = "the objio authors"
version = release = objio.__version__

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]

# Docstrings use reST fields (:param:, :raises:), which Sphinx reads without napoleon.
autoclass_content = "both"  # Checkpoint documents its parameters in __init__
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}

html_theme = "alabaster"
html_title = f"objio {release}"
