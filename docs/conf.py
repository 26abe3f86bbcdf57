"""Sphinx configuration of pkpd's documentation site.

Build it with ``make docs`` (``python docs/build.py``): the build script stages this folder with
the notebooks (as tutorials) and the README files it includes, so the sources stay where they
are and nothing is written into the checkout but ``build/docs``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pkpd_cli_help

import pkpd  # noqa: E402

project = "pkpd"
author = "the pkpd developers"
release = version = pkpd.__version__
copyright = "2026, the pkpd developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "pkpd_cli_help",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_includes/**", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # included README sections start at ### under a page title

# Notebooks: "off" shows the code only (the test suite builds the site this way; the
# notebooks' own test runs them); make docs runs them with their small settings.
nb_execution_mode = os.environ.get("PKPD_DOCS_EXECUTE", "force")
nb_execution_timeout = -1  # no per-cell limit: a busy machine is slow
nb_execution_raise_on_error = True
nb_merge_streams = True

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True  # "Attributes" sections as fields: no duplicate of dataclass fields

html_theme = "furo"
html_title = f"pkpd {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
