import pandas as pd

from bcc_pipeline.assets.common import markdown_table
from bcc_pipeline_tests.rendered_markdown import rendered_tables


def test_a_metadata_table_shows_a_users_names_as_written():
    names = ["grade|II/<b>x</b>.jpg", "brain_glioma/a*b*.jpg"]
    frame = pd.DataFrame({"path": names, "bytes": [1, 2]})
    (table,) = rendered_tables(markdown_table(frame).value)
    assert table == [["path", "bytes"], [names[0], "1"], [names[1], "2"]]
