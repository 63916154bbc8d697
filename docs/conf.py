"""Sphinx configuration of the batchdiff guide and API reference.

Sphinx with MyST-Parser and autodoc, the tool of NumPy, SciPy, JAX and CuPy. The pages
are Markdown, so pytest collects them as doctest text files (``--doctest-glob``), the
same way it tests the README: every example on a page runs. The API reference is
autodoc over the docstrings, which are reStructuredText prose with doctest examples
(no numpydoc sections, so neither numpydoc nor napoleon is needed). Build it with
``sphinx-build -W docs docs/_build/html``; ``tests/test_docs.py`` does, warnings as errors.
"""
project = "batchdiff"
author = "the batchdiff authors"
copyright = "the batchdiff authors, BSD-3-Clause"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3          # [text](page.md#a-heading) links to a heading

autodoc_member_order = "bysource"
autodoc_typehints = "none"        # the docstrings say what each argument takes
add_module_names = False

html_theme = "furo"
html_title = "batchdiff"
pygments_style = "sphinx"
autodoc_preserve_defaults = True   # show xp=np, not the repr of the module
