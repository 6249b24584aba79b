"""Run-config files read outside a run (the demo, the schedule, the sensor): each mistake in
one line, before anything is generated or requested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from bcc_pipeline.errors import ConfigError


def read_run_config(path: Path | str, name: str) -> dict[str, Any]:
    """The YAML mapping in `path` (`~` is the home folder, as in BCC_DATA_DIR; an empty file:
    no settings). `name` is how messages refer to the file, e.g. "BCC_RUN_CONFIG '/etc/x.yaml'"."""
    try:
        config = yaml.safe_load(Path(path).expanduser().read_bytes())
    except OSError as err:
        raise ConfigError(f"{name} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{name} is not valid YAML: {problem}{where}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(
            f"{name} holds a {type(config).__name__}, not a run config (a mapping with "
            "resources:, ops:)"
        )
    return config


def configured_data_dir(job: dg.JobDefinition, config: dict[str, Any], name: str) -> str | None:
    """The data_dir `config` sets for a run of `job`, read as the run will read it ({env: NAME}
    included); None where it sets none. Dagster checks the whole config on the way."""
    try:
        checked = dg.validate_run_config(job, config)
    except dg.DagsterInvalidConfigError as err:
        problems = "; ".join(_one_line(error.message) for error in err.errors)
        raise ConfigError(f"{name} does not fit {job.name}: {problems}") from None
    return checked["resources"]["dataset"]["config"].get("data_dir")


def _one_line(message: str) -> str:
    """One of Dagster's config errors in a line: without the schema it expected or the stack
    trace, with the cause it names after them (an environment variable that is not set)."""
    first, *rest = message.splitlines()
    cause = next((line.partition("Error: ")[2] for line in rest if "Error: " in line), "")
    return f"{first.split(' Expected: ')[0]} {cause}".strip()
