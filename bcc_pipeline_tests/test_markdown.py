import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from bcc_pipeline.markdown import markdown_text
from bcc_pipeline_tests.rendered_markdown import rendered_tables

MARKDOWN_PIECES = [*"ab _*|\\`[]()<>&#!~$-+=.:/\n\t\r\x00\x1b\u2028é脑", "&amp;", "&#60;", "<img>"]


def _as_escaped(text: str) -> str:
    """What a name shows as: line breaks and other invisible characters as their escapes."""
    names = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(
        names.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in ("Cc", "Zl", "Zp")
        else c
        for c in text
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MARKDOWN_PIECES), max_size=10).map("".join))
def test_any_text_shows_as_written_in_a_markdown_table_cell(text):
    table = f"| name | next |\n| --- | --- |\n| {markdown_text(text)} | x |\n"
    assert rendered_tables(table) == [[["name", "next"], [_as_escaped(text).strip(" "), "x"]]]
