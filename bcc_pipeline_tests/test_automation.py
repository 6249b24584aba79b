"""The retraining schedule and the new-data sensor, evaluated as the daemon would."""

import os
import shutil

import dagster as dg
import pytest
import yaml

from bcc_pipeline.definitions import defs
from bcc_pipeline.resources import DatasetResource
from bcc_pipeline.schedules import retraining_schedule
from bcc_pipeline.sensors import new_data_sensor


def test_schedule_is_weekly_off_by_default_and_uses_the_configured_run_config(
    tmp_path, monkeypatch
):
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


def test_sensor_records_a_baseline_then_requests_a_run_when_the_data_changes(sample_root, tmp_path):
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
    assert isinstance(unchanged, dg.SkipReason)
    new_image = next(data.rglob("*.jpg"))
    shutil.copy(new_image, new_image.with_name("new_scan.jpg"))
    changed = tick(first.cursor)
    assert len(changed.run_requests) == 1
    assert changed.cursor != first.cursor
    assert changed.run_requests[0].run_key == changed.cursor


def test_sensor_skips_a_missing_folder(tmp_path):
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"dataset": DatasetResource(data_dir=str(tmp_path / "absent"))},
    )
    assert "does not exist" in new_data_sensor(context).skip_message


def test_sensor_survives_a_file_name_that_is_not_utf8_and_sees_it_change(sample_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    dataset = DatasetResource(data_dir=str(data))
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"dataset": dataset}
    )
    baseline = new_data_sensor(context).cursor
    odd_name = os.path.join(os.fsencode(next(data.rglob("*.jpg")).parent), b"scan\xff.jpg")
    try:
        with open(odd_name, "wb") as handle:
            handle.write(b"\xff\xd8\xff")
    except OSError as err:
        pytest.skip(f"this file system refuses non-UTF-8 names: {err}")
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"dataset": dataset}, cursor=baseline
    )
    assert len(new_data_sensor(context).run_requests) == 1
