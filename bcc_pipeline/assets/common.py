"""What every asset shares: its group, how it records files, and how config errors surface."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd

from bcc_pipeline.markdown import markdown_text

GROUP = "brain_mri_classifier"
"""Every asset of the pipeline is in this group, and takes a `launch_checks` resource (unused in
its body): requiring it makes Dagster check the run's whole config before any asset starts,
whichever assets the run selects and whichever executor runs them."""


def artifact_metadata(path: Path) -> dict[str, dg.MetadataValue]:
    return {"artifact_path": dg.MetadataValue.path(str(path))}


def markdown_table(frame: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A frame as a markdown table the asset page renders; text cells (paths, labels, errors:
    a user's names) as written, see markdown_text."""
    shown = frame.head(max_rows)
    text_columns = shown.select_dtypes(include=["object", "string"]).columns
    shown = shown.assign(**{column: shown[column].map(markdown_text) for column in text_columns})
    text = shown.to_markdown(index=False)
    if len(frame) > max_rows:
        text += f"\n\n_{len(frame) - max_rows} more rows not shown_"
    return dg.MetadataValue.md(text)


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the errors a user can fix (bad config, missing data) into a Dagster Failure with
    just the message, instead of a traceback from deep inside a library."""
    try:
        yield
    except kinds as err:
        raise dg.Failure(description=f"{type(err).__name__}: {err}") from None


def markdown_image(path: Path, caption: str) -> str:
    """Markdown that shows a PNG inline on the asset page (the UI renders data URIs)."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"![{caption}](data:image/png;base64,{encoded})"
