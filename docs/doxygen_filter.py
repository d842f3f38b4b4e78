# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Doxygen's input filter for qi's headers (docs/Doxyfile): the headers explain their
declarations in plain // comments, which Doxygen would skip. This prints a header with

* a run of // comment lines directly above a declaration (no blank line between) as ///
  lines, which document that declaration;
* a // comment after a member or enumerator on the same line as ///<, which documents it;

* the file's opening comment (between the licence line and #pragma once) as the file's
  description (\\file, written over the licence line so that line numbers stay the header's);

and leaves every other comment as it is: section rules (// ---- ...) and notes followed by a
blank line.

    python3 docs/doxygen_filter.py include/qi/qi.h"""

import re
import sys

COMMENT = re.compile(r"^(\s*)//(?![/!])")
TRAILING = re.compile(r"^([^\"/]*[;,{])\s+//(?![/!<])")
SPECIAL = re.compile(r"([\\@<>])")


def escaped(text):
    """Comment text as Doxygen reads it literally: outside `code spans`, the characters it
    would take for commands or HTML tags (\\ @ < >) escaped."""
    parts = text.split("`")
    for k in range(0, len(parts), 2):
        parts[k] = SPECIAL.sub(r"\\\1", parts[k])
    return "`".join(parts)


def as_doc(line, marker):
    """`line` (a // comment, from its //) with its comment turned into `marker` text."""
    m = COMMENT.match(line)
    return m.group(1) + marker + escaped(line[m.end():])


def doc_comments(lines):
    out = list(lines)
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("#pragma once")), 0)
    opening = [k for k in range(1, start) if COMMENT.match(lines[k])]
    if opening and opening == list(range(1, opening[-1] + 1)):
        out[0] = "/// \\file\n"  # in place of the licence line: line numbers stay the source's
        for k in opening:
            out[k] = as_doc(lines[k], "///")
    i = start
    while i < len(lines):
        if not COMMENT.match(lines[i]):
            m = TRAILING.match(lines[i])
            if m:
                out[i] = m.group(1) + "  ///<" + escaped(lines[i][m.end():])
            i += 1
            continue
        j = i
        while j < len(lines) and COMMENT.match(lines[j]):
            j += 1
        follows = lines[j].strip() if j < len(lines) else ""
        is_rule = lines[i].lstrip().startswith("// --")
        if follows and not follows.startswith(("#", "}")) and not is_rule:
            for k in range(i, j):
                out[k] = as_doc(lines[k], "///")
        i = j
    return out


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write("".join(doc_comments(f.readlines())))
