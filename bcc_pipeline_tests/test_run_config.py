"""Run-config files read outside a run: each mistake one ConfigError line."""

import pytest

from bcc_pipeline.definitions import defs
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.run_config import configured_data_dir, read_run_config


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("ops: [\n", "run.yaml is not valid YAML: expected the node content, but found "
         "'<stream end>' (line 2, column 1)"),
        ("- 1\n", "run.yaml holds a list, not a run config (a mapping with resources:, ops:)"),
        ("a: \xff\n", "run.yaml is not valid YAML: unacceptable character #x00ff"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_run_config_says_what_it_is(tmp_path, text, said):
    path = tmp_path / "run.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        read_run_config(path, "run.yaml")
    assert str(caught.value).startswith(said)
    assert "\n" not in str(caught.value)


def test_an_empty_file_is_no_settings_and_a_missing_one_cannot_be_read(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert read_run_config(tmp_path / "empty.yaml", "empty.yaml") == {}
    with pytest.raises(ConfigError, match="missing.yaml cannot be read: No such file"):
        read_run_config(tmp_path / "missing.yaml", "missing.yaml")


def test_the_data_dir_is_read_as_the_run_will_read_it(monkeypatch):
    job = defs.resolve_job_def("training_job")
    monkeypatch.setenv("BCC_TEST_DATA", "/data/from/env")
    config = {"resources": {"dataset": {"config": {"data_dir": {"env": "BCC_TEST_DATA"}}}}}
    assert configured_data_dir(job, config, "run.yaml") == "/data/from/env"
    assert configured_data_dir(job, {}, "run.yaml") is None
    monkeypatch.delenv("BCC_TEST_DATA")
    with pytest.raises(ConfigError) as caught:
        configured_data_dir(job, config, "run.yaml")
    message = str(caught.value)
    assert message.startswith("run.yaml does not fit training_job: ")
    assert 'the environment variable "BCC_TEST_DATA" which is not set' in message
    assert "Expected" not in message and "\n" not in message


def test_a_path_under_the_home_folder_may_be_written_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "run.yaml").write_text("ops: {}\n")
    assert read_run_config("~/run.yaml", "BCC_RUN_CONFIG '~/run.yaml'") == {"ops": {}}
