import logging

import pytest

from bcc_pipeline.quiet import LIGHTNING_BANNER, MLFLOW_MIGRATIONS, quieter


def test_a_quieted_logger_says_warnings_only_and_gets_its_level_back(caplog):
    library = logging.getLogger("some.library")
    library.setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG), pytest.raises(RuntimeError), quieter("some.library"):
        library.info("not news")
        library.warning("news")
        raise RuntimeError
    assert [record.getMessage() for record in caplog.records] == ["news"]
    assert library.level == logging.DEBUG


def _lightning_banner() -> None:
    import pytorch_lightning as pl

    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)


def _new_mlflow_store(path) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()


class _Said(logging.Handler):
    """The lines a logger passes on, whether or not it propagates (MLflow's does not)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger, self.lines = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self)
        return self.lines

    def __exit__(self, *_) -> None:
        self.logger.removeHandler(self)


@pytest.mark.parametrize(
    ("name", "make", "said"),
    [
        (LIGHTNING_BANNER, lambda tmp_path: _lightning_banner(), "GPU available"),
        (MLFLOW_MIGRATIONS, lambda tmp_path: _new_mlflow_store(tmp_path), "Creating"),
    ],
    ids=["lightning", "mlflow"],
)
def test_the_named_loggers_are_the_ones_the_libraries_say_their_banners_on(
    name, make, said, tmp_path
):
    library = logging.getLogger(name)
    level = library.level
    library.setLevel(logging.INFO)
    try:
        with _Said(name) as lines:
            make(tmp_path / "a.db")
        assert any(said in line for line in lines)
        with _Said(name) as lines, quieter(name):
            make(tmp_path / "b.db")
        assert not any(said in line for line in lines)
    finally:
        library.setLevel(level)
