# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration of qi's documentation (scripts/qi docs builds it into build/docs).

The pages are the Markdown files of docs/ (MyST); the Python API reference is autodoc over the
package in python/, which must be built (scripts/qi build); the C++ reference is Doxygen's
(docs/Doxyfile), linked from the index."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's package first (a worktree sharing .venv imports its own build).
sys.path.insert(0, os.path.join(ROOT, "python"))

with open(os.path.join(ROOT, "include", "qi", "version.h"), encoding="utf-8") as f:
    _match = re.search(r'kVersion\s*=\s*"([^"]+)"', f.read())
if _match is None:
    raise RuntimeError("docs/conf.py: include/qi/version.h no longer defines kVersion = \"...\"")

project = "qi"
author = "qi contributors"
copyright = "qi contributors, Apache-2.0"
version = release = _match.group(1)

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "cpp_mainpage.md"]  # Doxygen's main page
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"qi {release}"
html_static_path = []
html_theme_options = {"nosidebar": False, "page_width": "1100px", "sidebar_width": "240px"}

# Names from other projects in signatures and base classes are not in this documentation
# (no intersphinx: the build reads nothing from the network), nor are private base classes.
nitpick_ignore_regex = [
    ("py:(class|obj|exc|data)", r"(numpy|np|torch|tf|tensorflow|keras|onnx|onnxruntime|enum|typing"
                                r"|collections|abc|contextlib|dataclasses|pybind11_builtins)\..*"),
    ("py:(class|obj)", r"(.*\.)?_[A-Za-z]\w*"),
]

# ---- docstrings -------------------------------------------------------------------------------
# qi's docstrings are plain text (`code` in single backticks, formulas such as |x| and 2^n, and
# "Args:" blocks), not reStructuredText. Before autodoc hands them to docutils they are made
# literal-safe: `code` becomes a literal, characters that reST takes for markup are escaped, and
# a line indented under the previous one starts a block of its own.
_CODE = re.compile(r"``(.+?)``|`([^`]+)`")
_MARKUP = re.compile(r"([\\*|])|(?<=\w)_(?=\W|$)")


def _escape(text):
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_MARKUP.sub(lambda k: "\\" + k.group(0), text[pos:m.start()]))
        code = m.group(1) if m.group(1) is not None else m.group(2)
        out.append(f"``{code}``" if not code.startswith(" ") and not code.endswith(" ")
                   else "``" + code.strip() + "``")
        pos = m.end()
    out.append(_MARKUP.sub(lambda k: "\\" + k.group(0), text[pos:]))
    return "".join(out)


def _indent(line):
    return len(line) - len(line.lstrip())


def plain_docstring(app, what, name, obj, options, lines):
    """autodoc-process-docstring: qi's plain-text docstring as safe reST, in place. Lines that
    start with "* " or "- " are list items (a list starts a block; its items' continuation
    lines are indented under their text)."""
    fixed, item_indent = [], None
    for line in lines:
        is_item = line.lstrip().startswith(("* ", "- "))
        if not line.strip():
            item_indent = None
        elif fixed and fixed[-1].strip():
            continues_item = item_indent is not None and _indent(line) == item_indent
            new_list = is_item and item_indent is None
            if (_indent(line) != _indent(fixed[-1]) and not continues_item) or new_list:
                fixed.append("")  # a change of indentation, or a list, starts a new block
                item_indent = None
        if is_item:
            item_indent = _indent(line) + 2
            fixed.append(line[:item_indent] + _escape(line[item_indent:]))
        else:
            fixed.append(_escape(line))
    lines[:] = fixed


def setup(app):
    app.connect("autodoc-process-docstring", plain_docstring)
