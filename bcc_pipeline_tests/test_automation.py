"""The retraining schedule and the new-data sensor, evaluated as the daemon would."""

import os
import shutil

import dagster as dg
import pytest
import yaml

from bcc_pipeline.data.manifest import folder_fingerprint
from bcc_pipeline.definitions import defs
from bcc_pipeline.resources import DatasetResource
from bcc_pipeline.schedules import build_retraining_schedule
from bcc_pipeline.sensors import new_data_sensor


def test_schedule_is_weekly_off_by_default_and_uses_the_configured_run_config(
    tmp_path, monkeypatch
):
    retraining_schedule = build_retraining_schedule()
    assert retraining_schedule.cron_schedule == "0 3 * * 1"
    assert retraining_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert retraining_schedule.job_name == "training_job"
    config = {"ops": {"preprocessed_tensors": {"config": {"image_size": 64}}}}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("BCC_RUN_CONFIG", str(config_file))
    context = dg.build_schedule_context(instance=dg.DagsterInstance.ephemeral())
    request = retraining_schedule.evaluate_tick(context).run_requests[0]
    assert request.run_config == config


def test_sensor_records_a_baseline_then_requests_a_run_once_changed_data_has_settled(
    sample_root, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    instance = dg.DagsterInstance.ephemeral()
    dataset = DatasetResource(data_dir=str(data))
    assert new_data_sensor.default_status == dg.DefaultSensorStatus.STOPPED

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"dataset": dataset}, definitions=defs
        )
        return new_data_sensor(context)

    first = tick(None)
    assert not first.run_requests and first.cursor
    unchanged = tick(first.cursor)
    assert not unchanged.run_requests and "no change" in unchanged.skip_reason.skip_message
    images = sorted(data.rglob("*.jpg"))
    shutil.copy(images[0], images[0].with_name("new_scan_1.jpg"))
    copying = tick(unchanged.cursor)
    assert not copying.run_requests and "waiting one more tick" in copying.skip_reason.skip_message
    shutil.copy(images[1], images[1].with_name("new_scan_2.jpg"))  # the copy goes on
    still_copying = tick(copying.cursor)
    assert not still_copying.run_requests
    settled = tick(still_copying.cursor)
    assert len(settled.run_requests) == 1
    assert tick(settled.cursor).run_requests == []  # trained on: no second run


def test_sensor_reads_a_cursor_written_before_it_waited_for_data_to_settle(sample_root, tmp_path):
    """An older sensor's cursor is the bare fingerprint it last requested a run for."""
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    dataset = DatasetResource(data_dir=str(data))

    def tick(cursor: str) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            cursor=cursor,
            resources={"dataset": dataset},
            definitions=defs,
        )
        return new_data_sensor(context)

    assert tick(folder_fingerprint(data)).run_requests == []
    assert tick("0123456789012345").run_requests == []  # changed since: wait one tick


def test_sensor_skips_a_missing_folder(tmp_path):
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"dataset": DatasetResource(data_dir=str(tmp_path / "absent"))},
        definitions=defs,
    )
    assert "does not exist" in new_data_sensor(context).skip_message


def test_sensor_survives_a_file_name_that_is_not_utf8_and_sees_it_change(sample_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    dataset = DatasetResource(data_dir=str(data))
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"dataset": dataset}, definitions=defs
    )
    baseline = new_data_sensor(context).cursor
    odd_name = os.path.join(os.fsencode(next(data.rglob("*.jpg")).parent), b"scan\xff.jpg")
    try:
        with open(odd_name, "wb") as handle:
            handle.write(b"\xff\xd8\xff")
    except OSError as err:
        pytest.skip(f"this file system refuses non-UTF-8 names: {err}")
    cursor = baseline
    for _ in range(2):  # the change is seen, then found settled
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            resources={"dataset": dataset},
            cursor=cursor,
            definitions=defs,
        )
        result = new_data_sensor(context)
        cursor = result.cursor
    assert len(result.run_requests) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BCC_RETRAIN_CRON", "0 3 * *"), ("BCC_RETRAIN_TIMEZONE", "Europe/Pariss")],
)
def test_a_mistyped_schedule_variable_skips_every_tick_instead_of_breaking_the_code_location(
    monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    schedule = build_retraining_schedule()
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(instance=dg.DagsterInstance.ephemeral())
    skipped = schedule.evaluate_tick(context)
    assert not skipped.run_requests
    assert f"{variable}={value!r}" in skipped.skip_message
    assert "NOT RUNNING" in schedule.description


def _sensor_tick(dataset: DatasetResource, cursor: str | None = None):
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"dataset": dataset},
        cursor=cursor,
        definitions=defs,
    )
    return new_data_sensor(context)


def test_sensor_watches_the_data_dir_of_the_run_config_it_requests_runs_with(
    sample_root, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    monkeypatch.setenv("WATCHED", str(data))
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump({"resources": {"dataset": {"config": {"data_dir": {"env": "WATCHED"}}}}})
    )
    monkeypatch.setenv("BCC_RUN_CONFIG", str(config_file))
    elsewhere = DatasetResource(data_dir=str(tmp_path / "absent"))
    first = _sensor_tick(elsewhere)
    assert (
        f"recorded the first fingerprint {folder_fingerprint(data)}"
        in first.skip_reason.skip_message
    )
    shutil.copy(next(data.rglob("*.jpg")), data / "new_scan.jpg")
    assert str(data) in _sensor_tick(elsewhere, first.cursor).skip_reason.skip_message


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot be read"),
        ("ops: [", "is not valid YAML"),
        ("- 1\n", "holds a list, not a run config"),
        ("resources: {dataset: {config: {data_dirr: x}}}", "does not fit training_job"),
    ],
)
def test_a_bad_run_config_file_is_a_skip_that_says_why_for_sensor_and_schedule(
    tmp_path, monkeypatch, content, said
):
    config_file = tmp_path / "run.yaml"
    if content is not None:
        config_file.write_text(content)
    monkeypatch.setenv("BCC_RUN_CONFIG", str(config_file))
    message = _sensor_tick(DatasetResource(data_dir=str(tmp_path))).skip_message
    assert "BCC_RUN_CONFIG" in message
    assert said in message
    if "data_dirr" not in (content or ""):  # the schedule leaves config checks to the run
        context = dg.build_schedule_context(instance=dg.DagsterInstance.ephemeral())
        assert said in build_retraining_schedule().evaluate_tick(context).skip_message
