"""Markdown as a reader sees it: rendered by a GFM-style renderer (markdown-it-py, with tables),
so tests check what a name looks like on the page, not how it was escaped. markdown-it-py comes
with rich, which Dagster needs."""

from html.parser import HTMLParser

from markdown_it import MarkdownIt


def rendered_html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rendered_tables(markdown: str) -> list[list[list[str]]]:
    """Every table of `markdown` as shown: rows (header first) of cell texts."""
    parser = _Tables()
    parser.feed(rendered_html(markdown))
    return parser.tables


def shown(name: str) -> str:
    """How a name with a line break is meant to show: the break as the two characters \\n."""
    return name.replace("\n", "\\n")
