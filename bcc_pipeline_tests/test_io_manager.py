"""Asset values between steps: each run reads its own, even with another run of the same assets
finishing in between on the same instance."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from bcc_pipeline.io_manager import RunScopedIOManager


def _assets(interleave=lambda: None) -> list[dg.AssetsDefinition]:
    """first -> middle -> last, where `last` reads `first`; `middle` calls `interleave` between
    the two, as a run running beside this one would finish there."""

    @dg.asset(config_schema={"value": str})
    def first(context: dg.AssetExecutionContext) -> str:
        return context.op_execution_context.op_config["value"]

    @dg.asset(deps=[first])
    def middle() -> None:
        interleave()

    @dg.asset(deps=[middle])
    def last(first: str) -> str:
        return first

    return [first, middle, last]


def _written(tmp_path: Path, name: str) -> str:
    """What an asset's value is: the path of a file it wrote."""
    path = tmp_path / name
    path.write_text(name)
    return str(path)


def _run(instance, value: str, io_manager, interleave=lambda: None, selection=None):
    return dg.materialize(
        _assets(interleave),
        instance=instance,
        resources={"io_manager": io_manager},
        run_config={"ops": {"first": {"config": {"value": value}}}} if value else None,
        selection=selection,
        raise_on_error=False,
    )


def test_a_run_reads_its_own_value_when_another_run_writes_the_same_asset_meanwhile(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager()
    a, b = _written(tmp_path, "A"), _written(tmp_path, "B")
    result = _run(instance, a, io_manager, lambda: _run(instance, b, io_manager))
    assert result.success
    assert result.output_for_node("last") == a


def test_the_interleaving_harness_shows_a_shared_io_manager_reading_the_other_runs_value(
    tmp_path,
):
    """The control for the test above: on Dagster's default the same interleaving gives the
    other run's value, so that test passing means the run-scoped values prevent it."""
    instance = dg.DagsterInstance.ephemeral()
    io_manager = dg.FilesystemIOManager(base_dir=instance.storage_directory())
    a, b = _written(tmp_path, "A"), _written(tmp_path, "B")
    result = _run(instance, a, io_manager, lambda: _run(instance, b, io_manager))
    assert result.output_for_node("last") == b


def test_an_asset_made_in_an_earlier_run_is_read_from_its_latest_materialization(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager()
    for name in ("old", "new"):
        assert _run(instance, _written(tmp_path, name), io_manager).success
    result = _run(instance, "", io_manager, selection=["last"])
    assert result.success and result.output_for_node("last") == str(tmp_path / "new")


@pytest.mark.parametrize(
    ("earlier_run", "lost", "said"),
    [
        (False, None, "first was never materialized: materialize it first"),
        (True, "values", "is not stored (an older version kept it elsewhere"),
        (True, "written", "which is gone (pruned by artifacts.keep_runs, or deleted)"),
    ],
)
def test_an_input_without_a_stored_value_fails_saying_what_to_materialize(
    tmp_path, earlier_run, lost, said
):
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager(base_dir=str(tmp_path / "values"))
    if earlier_run:
        (tmp_path / "written").mkdir()
        assert _run(instance, _written(tmp_path / "written", "gone"), io_manager).success
        shutil.rmtree(tmp_path / lost)
    result = _run(instance, "", io_manager, selection=["last"])
    assert not result.success
    assert said in result.failure_data_for_node("last").error.message
