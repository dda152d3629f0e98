"""Sphinx configuration of the convcore documentation.

Build (from the repository root, with the package and the docs extra installed):

    pip install ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the installed package's docstrings (numpydoc format),
so build against the package you want documented. Warnings are errors in CI.
"""
from __future__ import annotations

import convcore

project = "convcore"
author = "the convcore developers"
copyright = "convcore developers"
release = convcore.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Dotted references without a role (``convcore.conv2d``) render as code, and a broken
# cross-reference is a warning (an error in CI).
default_role = "py:obj"
nitpicky = True
nitpick_ignore_regex = [
    # Types written in prose in the docstrings' type fields ("array, shape (N, C, H, W)",
    # "int or (int, int)"): numpydoc turns each word into a cross-reference.
    (r"py:class", r".*"),
]

# -- autodoc / numpydoc -----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"          # the signatures' Literal/TypeVar types stay in the text
numpydoc_show_class_members = False  # api.rst lists the members it wants
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Docstring checks at build time (a failed check is a warning, so an error with -W): every
# documented object has a docstring with a summary line, and its Parameters section
# matches its signature. tests/test_docs.py checks the rest (Returns, Raises, Examples).
numpydoc_validation_checks = {"GL08", "SS01", "PR01", "PR02"}
numpydoc_validation_exclude = {
    # Records made by the library: their fields are Attributes, not Parameters.
    r"LayerSummary$", r"Conv2dGrads$",
}

# -- MyST (docs/design.md is Markdown) ------------------------------------------------------
myst_heading_anchors = 3

# -- HTML ---------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"convcore {release}"
html_static_path: list = []
html_theme_options = {
    "description": "Fast CPU 2-D convolution for NumPy",
    "fixed_sidebar": True,
}
