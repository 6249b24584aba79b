"""Where Dagster keeps the assets' values between steps: each value is the path of what the
asset wrote, stored per run, so that runs at the same time (the schedule beside a run from the
UI, two CI jobs on one instance) never read each other's. Dagster's default keeps one file per
asset, which the run that writes last overwrites: a run could then split another run's manifest
or evaluate another run's model."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from bcc_pipeline.storage import write_json


class RunScopedIOManager(dg.ConfigurableIOManagerFactory):
    """Asset values as `<base_dir>/<run_id>/<asset>.json`."""

    base_dir: str | None = Field(
        default=None,
        description="Where the values go. Unset: the Dagster instance's storage folder.",
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> RunScopedValues:
        instance = context.instance
        if instance is None:
            raise dg.DagsterInvariantViolationError("the IO manager needs a Dagster instance")
        return RunScopedValues(Path(self.base_dir or instance.storage_directory()), instance)


class RunScopedValues(dg.IOManager):
    """Every value is the path of what its asset wrote: one that is gone since is said as such,
    before a step fails on it."""

    def __init__(self, base_dir: Path, instance: dg.DagsterInstance) -> None:
        self.base_dir = base_dir
        self.instance = instance

    def _path(self, run_id: str, asset_key: dg.AssetKey) -> Path:
        return self.base_dir / run_id / f"{'/'.join(asset_key.path)}.json"

    def handle_output(self, context: dg.OutputContext, obj: str) -> None:
        write_json(self._path(context.run_id, context.asset_key), obj)

    def load_input(self, context: dg.InputContext) -> str:
        """The value of the run that made the upstream output: this run (or, re-executed, the
        run it re-executes) when it made it, else the asset's latest materialization."""
        asset_key = context.asset_key
        name = asset_key.to_user_string()
        try:
            run_id = context.upstream_output.run_id
        except dg.DagsterInvariantViolationError:
            run_id = None
        # Not made in this run: Dagster names no run, or a placeholder that is none.
        if run_id is None or not self.instance.has_run(run_id):
            latest = self.instance.get_latest_materialization_event(asset_key)
            if latest is None:
                raise dg.Failure(f"{name} was never materialized: materialize it first") from None
            run_id = latest.run_id
        path = self._path(run_id, asset_key)
        if not path.exists():
            raise dg.Failure(
                f"the value of {name} from run {run_id} is not stored (an older version kept "
                f"it elsewhere, or {self.base_dir} was cleaned): materialize {name} again"
            )
        value = json.loads(path.read_text())
        if not Path(value).exists():
            raise dg.Failure(
                f"{name} of run {run_id} wrote {value}, which is gone (pruned by "
                f"artifacts.keep_runs, or deleted): materialize {name} again"
            )
        return value
