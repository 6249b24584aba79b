"""Asset values between steps: each run reads its own, even with another run of the same assets
finishing in between on the same instance."""

import shutil

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


def _run(instance, value: str, io_manager, interleave=lambda: None, selection=None):
    return dg.materialize(
        _assets(interleave),
        instance=instance,
        resources={"io_manager": io_manager},
        run_config={"ops": {"first": {"config": {"value": value}}}} if value else None,
        selection=selection,
        raise_on_error=False,
    )


def test_a_run_reads_its_own_value_when_another_run_writes_the_same_asset_meanwhile():
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager()
    result = _run(instance, "A", io_manager, lambda: _run(instance, "B", io_manager))
    assert result.success
    assert result.output_for_node("last") == "A"


def test_dagsters_default_io_manager_would_read_the_other_runs_value():
    """The failure the run-scoped values prevent, shown on Dagster's default."""
    instance = dg.DagsterInstance.ephemeral()
    io_manager = dg.FilesystemIOManager(base_dir=instance.storage_directory())
    result = _run(instance, "A", io_manager, lambda: _run(instance, "B", io_manager))
    assert result.output_for_node("last") == "B"


def test_an_asset_made_in_an_earlier_run_is_read_from_its_latest_materialization():
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager()
    for value in ("old", "new"):
        assert _run(instance, value, io_manager).success
    result = _run(instance, "", io_manager, selection=["last"])
    assert result.success and result.output_for_node("last") == "new"


@pytest.mark.parametrize(
    ("earlier_run", "said"),
    [
        (False, "first was never materialized: materialize it first"),
        (True, "is not stored (an older version kept it elsewhere"),
    ],
)
def test_an_input_without_a_stored_value_fails_saying_what_to_materialize(
    tmp_path, earlier_run, said
):
    instance = dg.DagsterInstance.ephemeral()
    io_manager = RunScopedIOManager(base_dir=str(tmp_path / "values"))
    if earlier_run:
        assert _run(instance, "gone", io_manager).success
        shutil.rmtree(tmp_path / "values")
    result = _run(instance, "", io_manager, selection=["last"])
    assert not result.success
    assert said in result.failure_data_for_node("last").error.message
