"""Names a user chose (class folders, file names, paths) written into markdown: the report,
the model card and the asset pages show them as written, whatever characters they hold."""

from __future__ import annotations

import unicodedata

MARKDOWN_ESCAPES = {
    **{c: f"\\{c}" for c in "\\`*_[]|~#$"},
    "<": "&lt;",
    ">": "&gt;",
    "&": "&amp;",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def markdown_text(text: object) -> str:
    """`text` (a class or file name, a path: anything a user named) as literal markdown, safe in
    a table cell or a bullet: markdown's and HTML's special characters are escaped, so a `|`
    cannot add a column nor `<img ...>` reach the page, and line breaks and other invisible
    characters are written as escapes (`\\n`), so a name cannot break its table row. An `_`
    inside a word (`brain_glioma`) stays as it is: markdown never reads that one as emphasis."""
    text = str(text)

    def escaped(index: int, char: str) -> str:
        within_word = 0 < index < len(text) - 1 and (text[index - 1] + text[index + 1]).isalnum()
        if char == "_" and within_word:
            return char
        if char in MARKDOWN_ESCAPES:
            return MARKDOWN_ESCAPES[char]
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):  # controls, lone surrogates
            code = ord(char)
            return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        return char

    return "".join(escaped(index, char) for index, char in enumerate(text))
