"""The launch check: config mistakes stop a run before any asset, in one message per field."""

import os
import urllib.error

import dagster as dg
import pytest
import torch

from bcc_pipeline import launch_checks
from bcc_pipeline.data import parallel
from bcc_pipeline.definitions import defs
from bcc_pipeline.launch_checks import launch_problems
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    DatasetResource,
    QualityGatesResource,
)
from bcc_pipeline_tests.assets.conftest import (
    launch_failure,
    pipeline_assets,
    resources,
    tiny_run_config,
)

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour without a GPU")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    """No cached weights, and every download fails, as on an air-gapped machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)


def _run(sample_root, artifacts_root, run_config, **resource_options):
    return dg.materialize(
        pipeline_assets(),
        resources=resources(sample_root, artifacts_root, **resource_options),
        run_config=run_config,
        raise_on_error=False,
    )


def _with(config: dg.RunConfig, op: str, **changes) -> dg.RunConfig:
    ops = {name: {"config": dict(value["config"])} for name, value in config.ops.items()}
    ops.setdefault(op, {"config": {}})["config"].update(changes)
    return dg.RunConfig(ops=ops)


@pytest.mark.parametrize(
    ("op", "changes", "expected"),
    [
        (
            "vit_checkpoint",
            {"backbone": "vit_b16"},
            "ops.vit_checkpoint.config.backbone: unknown backbone 'vit_b16'",
        ),
        ("vit_checkpoint", {"backbone": "vit_b16"}, "Did you mean vit_b_16"),
        (
            "vit_checkpoint",
            {"learning_rate": -1},
            "ops.vit_checkpoint.config.learning_rate: Input should be greater than 0",
        ),
        (
            "vit_checkpoint",
            {"batch_size": 0},
            "ops.vit_checkpoint.config.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "vit_checkpoint",
            {"trainable_blocks": 9},
            "ops.vit_checkpoint.config.trainable_blocks: trainable_blocks 9 exceeds the 4 blocks",
        ),
        (
            "vit_checkpoint",
            {"weights": "/nowhere/vit.pth"},
            "ops.vit_checkpoint.config.weights: weights file '/nowhere/vit.pth' does not exist",
        ),
        (
            "preprocessed_tensors",
            {"image_size": 40},
            "ops.preprocessed_tensors.config.image_size: vit_tiny takes whole 16-pixel patches",
        ),
        (
            "vit_checkpoint",
            {"seed": 2**32},
            "ops.vit_checkpoint.config.seed: Input should be less than or equal to 4294967295",
        ),
        (
            "stratified_split",
            {"seed": -1},
            "ops.stratified_split.config.seed: Input should be greater than or equal to 0",
        ),
        (
            "stratified_split",
            {"train_fraction": 0.8},
            "ops.stratified_split.config: split fractions must sum to 1",
        ),
        (
            "stratified_split",
            {"train_fraction": float("nan")},
            "ops.stratified_split.config: every fraction must be above 0 and below 1",
        ),
        (
            "stratified_split",
            {"near_duplicate_distance": 300},
            "ops.stratified_split.config.near_duplicate_distance: Input should be less than or "
            "equal to 255",
        ),
        (
            "vit_checkpoint",
            {"learning_rate": float("inf")},
            "ops.vit_checkpoint.config.learning_rate: Input should be a finite number",
        ),
        (
            "preprocessed_tensors",
            {"image_size": 2048},
            "ops.preprocessed_tensors.config.image_size: Input should be less than or equal to "
            "1024",
        ),
    ],
)
def test_a_config_mistake_stops_the_run_before_any_asset(
    sample_root, tmp_path, op, changes, expected
):
    result = _run(sample_root, tmp_path, _with(tiny_run_config(), op, **changes))
    message = launch_failure(result)
    assert "nothing was run" in message
    assert expected in message


def test_pretrained_weights_needing_another_size_and_no_download_are_both_said(
    sample_root, tmp_path, empty_torch_cache
):
    config = _with(
        _with(tiny_run_config(), "vit_checkpoint", backbone="vit_b_16", weights="DEFAULT"),
        "preprocessed_tensors",
        image_size=112,
    )
    message = launch_failure(_run(sample_root, tmp_path, config))
    assert "2 problems" in message
    assert (
        "ops.preprocessed_tensors.config.image_size: vit_b_16 with weights "
        "ViT_B_16_Weights.IMAGENET1K_V1 needs image_size 224; got 112"
    ) in message
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vit_b_16-c867db91.pth"
    assert "ops.vit_checkpoint.config.weights: cannot download" in message
    assert str(cached) in message


@no_gpu
def test_a_gpu_that_is_not_there_stops_the_run_naming_what_is(sample_root, tmp_path):
    message = launch_failure(_run(sample_root, tmp_path, tiny_run_config(), accelerator="gpu"))
    assert "resources.accelerator.config.accelerator: accelerator 'gpu' was asked for" in message
    assert "Available: cpu" in message


def test_an_artifacts_root_that_cannot_be_created_stops_the_run(sample_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = launch_failure(_run(sample_root, blocker / "artifacts", tiny_run_config()))
    assert "resources.artifacts.config.root: cannot write to" in message
    assert "a_file is a file, not a folder" in message


def test_every_problem_is_listed_at_once(sample_root, tmp_path):
    config = _with(
        _with(tiny_run_config(), "vit_checkpoint", backbone="nope", learning_rate=0),
        "stratified_split",
        test_fraction=0.5,
    )
    message = launch_failure(_run(sample_root, tmp_path, config))
    assert "3 problems" in message
    assert message.count("\n- ") == 3


def _problems(tmp_path, run_config, selected=None, data_dir=None, root=None, **accelerator):
    """The launch problems, with a data folder and an artifacts root side by side under
    tmp_path unless given."""
    (tmp_path / "data").mkdir(exist_ok=True)
    return launch_problems(
        run_config,
        selected,
        DatasetResource(data_dir=str(data_dir or tmp_path / "data")),
        ArtifactsResource(root=str(root or tmp_path / "artifacts")),
        AcceleratorResource(**{"accelerator": "cpu", **accelerator}),
        QualityGatesResource(),
    )


def _training(**settings) -> dict:
    return {"ops": {"vit_checkpoint": {"config": settings}}}


def test_only_the_assets_a_run_selects_are_checked(tmp_path):
    bad = _training(backbone="nope", weights="none")
    assert _problems(tmp_path, bad, {"raw_image_manifest", "stratified_split"}) == []
    problems = _problems(tmp_path, bad, {"vit_checkpoint"})
    assert len(problems) == 1 and problems[0].startswith("ops.vit_checkpoint.config.backbone")


@pytest.mark.parametrize(("backbone", "accepted"), [("resnet18", True), ("vit_b_16", False)])
def test_the_backbone_decides_which_image_sizes_work(tmp_path, backbone, accepted):
    config = _training(backbone=backbone, weights="none")
    config["ops"]["preprocessed_tensors"] = {"config": {"image_size": 100}}
    problems = _problems(tmp_path, config)
    assert (problems == []) is accepted
    if not accepted:
        assert problems[0].startswith("ops.preprocessed_tensors.config.image_size: vit_b_16")


@pytest.mark.parametrize("devices", [2, [0, 1], "0,1", "2", "auto"])
def test_devices_take_every_form_lightning_does(devices):
    job = defs.resolve_job_def("training_job")
    config = {"resources": {"accelerator": {"config": {"devices": devices}}}}
    assert dg.validate_run_config(job, config)["resources"]["accelerator"]["config"] == {
        **dg.validate_run_config(job, {})["resources"]["accelerator"]["config"],
        "devices": devices,
    }


@no_gpu
@pytest.mark.parametrize(
    ("strategy", "said"),
    [("dp", "invalid strategy name"), ("fsdp", "requires a GPU accelerator")],
)
def test_a_strategy_lightning_cannot_use_here_is_a_launch_problem(tmp_path, strategy, said):
    """Training builds its Trainer only after the features are cached: minutes on a CPU."""
    config = _training(backbone="vit_tiny", weights="none")
    problems = _problems(tmp_path, config, {"vit_checkpoint"}, strategy=strategy)
    assert len(problems) == 1
    assert problems[0].startswith(
        "resources.accelerator.config.strategy: Lightning cannot train with these settings here"
    )
    assert said in problems[0]
    assert _problems(tmp_path, config, {"test_metrics_report"}, strategy=strategy) == []


@pytest.mark.parametrize(
    ("data_dir", "root", "said"),
    [
        (
            "data",
            "data",
            "resources.artifacts.config.root: the artifacts root '{tmp}/data' is inside the data "
            "folder '{tmp}/data'",
        ),
        (
            "data",
            "data/out",
            "resources.artifacts.config.root: the artifacts root '{tmp}/data/out' is inside",
        ),
    ],
)
def test_an_artifacts_root_inside_the_data_folder_is_a_launch_problem(
    tmp_path, data_dir, root, said
):
    """Otherwise each scan reads the last run's reports and plots as images."""
    (tmp_path / data_dir).mkdir(parents=True, exist_ok=True)
    problems = _problems(
        tmp_path, {}, {"raw_image_manifest"}, data_dir=tmp_path / data_dir, root=tmp_path / root
    )
    assert len(problems) == 1 and problems[0].startswith(said.format(tmp=tmp_path.resolve()))
    assert _problems(tmp_path, {}, {"stratified_split"}, root=tmp_path / root) == []


def test_a_path_that_is_not_utf8_is_a_launch_problem_not_a_failed_report(tmp_path):
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/d\xffata")
    os.mkdir(odd)
    problems = _problems(tmp_path, {}, {"raw_image_manifest"}, data_dir=odd, root=odd + "-out")
    assert problems == [
        f"resources.artifacts.config.root: the path '{tmp_path.resolve()}/d\\xffata-out' is not "
        "valid UTF-8 (made with another code page?); rename the folder, or link to it from a "
        "path that is",
        f"resources.dataset.config.data_dir: the path '{tmp_path}/d\\xffata' is not valid UTF-8 "
        "(made with another code page?); rename the folder, or link to it from a path that is",
    ]


def test_a_data_dir_that_is_a_file_is_said_to_be_one(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    problems = _problems(tmp_path, {}, {"raw_image_manifest"}, data_dir=tmp_path / "data.zip")
    assert problems == [
        f"resources.dataset.config.data_dir: data folder '{tmp_path}/data.zip' is a file, not a "
        "folder; set data_dir (or BCC_DATA_DIR) to the folder that holds the class folders"
    ]


def test_two_cpu_devices_written_as_a_yaml_integer_give_two_processes():
    device = AcceleratorResource(accelerator="cpu", devices=2, strategy="ddp").trainer_device()
    assert device.world_size == 2 and device.devices == 2
    assert device.strategy == "ddp_spawn", "two processes started from inside the run"


def test_resource_settings_out_of_range_are_launch_problems(tmp_path):
    """A percentage where a fraction belongs is the usual slip; each is named with its path."""
    (tmp_path / "data").mkdir()
    problems = launch_problems(
        {},
        {"raw_image_manifest"},
        DatasetResource(data_dir=str(tmp_path / "data"), max_file_bytes=0),
        ArtifactsResource(root=str(tmp_path / "artifacts"), keep_runs=-1),
        AcceleratorResource(accelerator="cpu"),
        QualityGatesResource(accuracy_floor=80, significance_level=-0.1),
    )
    assert problems == [
        "resources.artifacts.config.keep_runs: keep_runs must be at least 0; got -1",
        "resources.dataset.config.max_file_bytes: max_file_bytes must be at least 1; got 0",
        "resources.quality.config.accuracy_floor: accuracy_floor is a fraction from 0 to 1; got "
        "80.0",
        "resources.quality.config.significance_level: significance_level is a fraction from 0 "
        "to 1; got -0.1",
    ]


def test_a_run_that_scans_starts_its_worker_server_before_the_checks(
    sample_root, tmp_path, monkeypatch
):
    """The server imports the scan's and the decoder's modules while the checks import torch;
    a run of training alone has no use for it."""
    events: list[object] = []
    monkeypatch.setattr(parallel, "start_worker_server", lambda *modules: events.append(modules))
    original = launch_checks.raise_for_problems
    monkeypatch.setattr(
        launch_checks,
        "raise_for_problems",
        lambda *args, **kwargs: events.append("checks") or original(*args, **kwargs),
    )
    setup = resources(sample_root, tmp_path / "artifacts")
    dg.materialize([defs.get_assets_def("raw_image_manifest")], resources=setup)
    assert events == [("bcc_pipeline.data.manifest", "bcc_pipeline.data.tensors"), "checks"]
    events.clear()
    training = tiny_run_config().to_config_dict()["ops"]["vit_checkpoint"]
    dg.materialize(
        pipeline_assets(),
        resources=setup,
        selection=["vit_checkpoint"],
        run_config={"ops": {"vit_checkpoint": training}},
        raise_on_error=False,  # its input was never made; the launch check came first
    )
    assert events == ["checks"]
