"""MLflow tracking and registry, checked through MLflow's own client on temporary SQLite stores."""

import http.server
import socket
import threading
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from bcc_pipeline import tracking as tracking_module
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.settings import DeviceSettings, TrainingSettings
from bcc_pipeline.resources import ArtifactsResource, TrackingResource
from bcc_pipeline.tracking import (
    CHECKPOINT_PATH_TAG,
    EXPERIMENT_KIND_TAG,
    PIPELINE_RUN_TAG,
    PREVIOUS_ALIAS,
    PRODUCTION_ALIAS,
    REGISTERED_MODEL,
    TrackingError,
    TrackingStore,
    production_model_uri,
)
from bcc_pipeline_tests.assets.conftest import launch_failure
from bcc_pipeline_tests.conftest import mlflow_store_at

HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2, 3],
        "train_acc": [0.4, 0.6, 0.7],
        "train_loss": [1.1, 0.9, 0.8],
        "val_acc": [0.5, 0.55, 0.65],
        "val_loss": [1.0, 0.95, 0.97],
    }
)


@pytest.fixture
def store_uri(empty_mlflow_db: Path, tmp_path: Path) -> str:
    return mlflow_store_at(tmp_path / "store" / "mlflow.db", empty_mlflow_db)


def _artifacts(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run_id, folder)}


def test_each_pipeline_run_is_one_mlflow_run_found_again_by_its_tag(store_uri):
    # Each step process opens the store on its own; all of them must land in one run.
    first = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-a")
    again = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-a")
    other = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-b")
    assert again.run_id == first.run_id != other.run_id
    client = MlflowClient(store_uri)
    run = client.get_run(first.run_id)
    assert run.data.tags[PIPELINE_RUN_TAG] == "run-a"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "bcc_pipeline"
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_training_log_has_one_point_per_epoch_params_files_and_the_checkpoints_path(
    store_uri, tmp_path
):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    history_csv = tmp_path / "history.csv"
    history_csv.write_text(HISTORY.to_csv(index=False))
    run = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-a")
    run.log_training({"training.seed": "42"}, HISTORY, {"best_epoch": 2}, checkpoint, [history_csv])

    client = MlflowClient(store_uri)
    for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, name))
        assert points == list(zip(HISTORY["epoch"], HISTORY[name], strict=True)), name
    logged = client.get_run(run.run_id)
    assert logged.data.params == {"training.seed": "42"}
    assert logged.data.metrics["best_epoch"] == 2
    assert logged.data.tags[CHECKPOINT_PATH_TAG] == str(checkpoint)
    assert logged.info.status == "FINISHED"
    assert _artifacts(client, run.run_id, "training") == {"training/history.csv"}
    assert _artifacts(client, run.run_id, "checkpoint") == set(), "not copied unless promoted"


def test_a_training_run_copies_its_checkpoint_into_the_store_when_asked(store_uri, tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    run = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-a")
    run.log_training({}, HISTORY, {}, checkpoint, [], log_checkpoint=True)

    assert _artifacts(MlflowClient(store_uri), run.run_id, "checkpoint") == {"checkpoint/model.pt"}
    # A SQLite store keeps its files beside the database, wherever the process runs.
    beside = Path(store_uri.removeprefix("sqlite:///")).parent / "artifacts"
    assert [p.read_bytes() for p in beside.rglob("model.pt")] == [b"weights"]


def test_evaluation_logs_the_report_metrics_it_has_and_the_whole_report_folder(store_uri, tmp_path):
    folder = tmp_path / "report"
    (folder / "explanations").mkdir(parents=True)
    for name in ("report.json", "report.md", "model_card.md", "explanations/a.png"):
        (folder / name).write_text(name)
    report = {"accuracy": 0.9, "macro_f1": 0.8, "loss": 0.3, "ece": 0.05, "macro_auroc": None}
    run = TrackingStore.open(store_uri, "bcc_pipeline").run_for("run-a")
    run.log_evaluation(report, folder)

    client = MlflowClient(store_uri)
    metrics = client.get_run(run.run_id).data.metrics
    assert metrics == {"test_accuracy": 0.9, "test_macro_f1": 0.8, "test_loss": 0.3, "ece": 0.05}
    assert _artifacts(client, run.run_id, "report") == {
        "report/report.json",
        "report/report.md",
        "report/model_card.md",
        "report/explanations",
    }
    assert _artifacts(client, run.run_id, "report/explanations") == {"report/explanations/a.png"}


def test_promotion_moves_the_production_alias_and_keeps_the_replaced_one_an_alias_away(
    store_uri, tmp_path, monkeypatch
):
    store = TrackingStore.open(store_uri, "bcc_pipeline")
    first_checkpoint = tmp_path / "a" / "model.pt"
    first_checkpoint.parent.mkdir()
    first_checkpoint.write_bytes(b"weights of a")
    first = store.run_for("run-a")
    first.log_training({}, HISTORY, {}, first_checkpoint, [])
    first.register_production_model(first_checkpoint, {"accuracy": 0.8}, "first model")
    # A promotion in a run that did not train logs the checkpoint itself.
    second_checkpoint = tmp_path / "b" / "model.pt"
    second_checkpoint.parent.mkdir()
    second_checkpoint.write_bytes(b"weights of b")
    second = store.run_for("run-b")
    version = second.register_production_model(
        second_checkpoint, {"accuracy": 0.9, "macro_f1": 0.85}, "no worse than production"
    )

    client = MlflowClient(store_uri)
    model = client.get_registered_model(REGISTERED_MODEL)
    assert model.aliases == {PRODUCTION_ALIAS: 2, PREVIOUS_ALIAS: 1}
    production = client.get_model_version_by_alias(REGISTERED_MODEL, PRODUCTION_ALIAS)
    assert int(production.version) == int(version.version) == 2
    assert production.run_id == second.run_id
    assert production.tags == {
        PIPELINE_RUN_TAG: "run-b",
        "promotion_reason": "no worse than production",
        "test_accuracy": "0.9",
        "test_macro_f1": "0.85",
    }
    assert client.get_model_version(REGISTERED_MODEL, "1").run_id == first.run_id
    # What a user would do: fetch the model in use by its alias.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    fetched = Path(mlflow.artifacts.download_artifacts(production_model_uri(), dst_path=tmp_path))
    assert (fetched / "model.pt").read_bytes() == b"weights of b"
    # Training did not copy the first checkpoint into the store; its promotion did.
    first_version = mlflow.artifacts.download_artifacts(
        f"models:/{REGISTERED_MODEL}/1", dst_path=str(tmp_path / "v1")
    )
    assert (Path(first_version) / "model.pt").read_bytes() == b"weights of a"


def test_an_unusable_store_is_one_error_naming_the_uri(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(TrackingError, match="cannot use the MLflow tracking store") as caught:
        TrackingStore.open(uri, "bcc_pipeline")
    assert uri in str(caught.value) and caught.value.setting == "tracking_uri"
    with pytest.raises(TrackingError, match="nosuchscheme://x"):
        TrackingStore.open("nosuchscheme://x", "bcc_pipeline")


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///"])
def test_an_in_memory_store_is_refused_as_it_would_lose_every_run(uri):
    with pytest.raises(TrackingError, match="is an in-memory SQLite store") as caught:
        TrackingStore.open(uri, "bcc_pipeline")
    assert caught.value.setting == "tracking_uri"


def test_a_deleted_experiment_is_said_with_how_to_restore_it_before_training(store_uri):
    store = TrackingStore.open(store_uri, "bcc_pipeline")
    store.client.delete_experiment(store.experiment_id)
    with pytest.raises(TrackingError, match="mlflow experiments restore --experiment-id") as caught:
        TrackingStore.open(store_uri, "bcc_pipeline")
    assert caught.value.setting == "experiment_name"


def test_a_damaged_store_file_is_one_error_naming_the_uri(tmp_path):
    damaged = tmp_path / "mlflow.db"
    damaged.write_bytes(b"this is not a database" * 100)
    uri = f"sqlite:///{damaged}"
    with pytest.raises(TrackingError, match="file is not a database") as caught:
        TrackingStore.open(uri, "bcc_pipeline")
    assert uri in str(caught.value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_refuses_the_connection_is_said_at_once_not_after_retries():
    """MLflow's client alone retried for about four minutes against a closed port."""
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingError, match="does not answer .*Connection refused") as caught:
        TrackingStore.open(uri, "bcc_pipeline")
    assert uri in str(caught.value) and caught.value.setting == "tracking_uri"


def test_a_server_that_never_answers_is_said_after_the_answer_timeout(monkeypatch):
    monkeypatch.setattr(tracking_module, "SERVER_ANSWER_SECONDS", 0.5)
    with socket.socket() as silent:  # accepts connections (the backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(TrackingError, match="does not answer .*timed out"):
            TrackingStore.open(uri, "bcc_pipeline")


def test_a_server_that_answers_at_all_gets_mlflows_own_calls():
    """Any status will do for the first check (a proxy may want a login for /health); MLflow's
    own requests come next, and here get 404 at once."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(TrackingError, match="cannot use the MLflow tracking store .*404"):
            TrackingStore.open(f"http://127.0.0.1:{server.server_port}", "bcc_pipeline")
    finally:
        server.shutdown()
        server.server_close()


def test_default_store_is_sqlite_under_the_artifacts_root_read_at_run_time(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BCC_ARTIFACTS_DIR", raising=False)
    tracking = TrackingResource(artifacts=ArtifactsResource())
    monkeypatch.setenv("BCC_ARTIFACTS_DIR", str(tmp_path))
    assert tracking.uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.uri == "http://mlflow.example:5000"
    configured = TrackingResource(artifacts=ArtifactsResource(), tracking_uri="sqlite:///x.db")
    assert configured.uri == "sqlite:///x.db"


def _materialize_with(tracking: TrackingResource) -> tuple[dg.ExecuteInProcessResult, list]:
    """A run of one asset that takes the tracking resource; returns the result and whether
    the asset's body ran."""
    ran = []

    @dg.asset
    def tracked_asset(tracking: TrackingResource) -> None:
        ran.append(True)

    result = dg.materialize([tracked_asset], resources={"tracking": tracking}, raise_on_error=False)
    return result, ran


def test_a_store_that_cannot_be_used_stops_the_run_before_any_asset(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    tracking = TrackingResource(
        artifacts=ArtifactsResource(root=str(tmp_path)),
        tracking_uri=f"sqlite:///{blocker}/mlflow.db",
    )
    result, ran = _materialize_with(tracking)
    assert not ran
    assert "cannot use the MLflow tracking store" in launch_failure(result)


def test_disabled_tracking_logs_nothing_and_opens_no_store(tmp_path):
    tracking = TrackingResource(artifacts=ArtifactsResource(root=str(tmp_path)), enabled=False)
    result, ran = _materialize_with(tracking)
    assert result.success and ran
    run = dg.DagsterRun(job_name="training_job", run_id="run-a")
    folder = tmp_path / "report"
    folder.mkdir()
    assert tracking.log_evaluation(run, {"accuracy": 1.0}, folder) == {}
    assert tracking.register_promoted_model(run, tmp_path / "model.pt", {}, "reason") == {}
    assert not (tmp_path / "mlflow").exists()


def test_split_settings_are_logged_only_by_runs_that_made_the_split(
    empty_mlflow_db, sample_tensors, tmp_path
):
    uri = mlflow_store_at(tmp_path / "mlflow.db", empty_mlflow_db)
    tracking = TrackingResource(artifacts=ArtifactsResource(root=str(tmp_path)), tracking_uri=uri)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    device = TrainerDevice.resolve(DeviceSettings(accelerator="cpu"))
    split_config = {"ops": {"stratified_split": {"config": {"seed": 7}}}}
    whole_job = dg.DagsterRun(job_name="training_job", run_id="whole", run_config=split_config)
    training_selected = dg.DagsterRun(
        job_name="training_job",
        run_id="training-selected",
        run_config=split_config,
        asset_selection=frozenset({dg.AssetKey("vit_checkpoint")}),
    )
    training_step = dg.DagsterRun(
        job_name="training_job",
        run_id="training-step",
        run_config=split_config,
        step_keys_to_execute=["vit_checkpoint"],
    )
    params = {}
    for run in (whole_job, training_selected, training_step):
        links = tracking.log_training(
            run, TrainingSettings(), device, sample_tensors, HISTORY, {}, checkpoint, []
        )
        params[run.run_id] = MlflowClient(uri).get_run(links["mlflow_run_id"].value).data.params

    assert params["whole"]["split.seed"] == "7"
    assert params["whole"]["split.train_fraction"] == "0.7"
    for elsewhere in ("training-selected", "training-step"):
        assert not [key for key in params[elsewhere] if key.startswith("split.")], elsewhere
    for logged in params.values():
        assert logged["training.backbone"] == "vit_b_16"
        assert logged["accelerator.accelerator"] == "cpu"
        assert logged["data.split_fingerprint"] == sample_tensors.fingerprint
        assert logged["data.n_test"] == str(len(sample_tensors.labels("test")))


@pytest.mark.parametrize("every_checkpoint", [False, True])
def test_the_resource_copies_checkpoints_of_unpromoted_runs_only_when_configured(
    empty_mlflow_db, sample_tensors, tmp_path, every_checkpoint
):
    uri = mlflow_store_at(tmp_path / "mlflow.db", empty_mlflow_db)
    tracking = TrackingResource(
        artifacts=ArtifactsResource(root=str(tmp_path)),
        tracking_uri=uri,
        log_every_checkpoint=every_checkpoint,
    )
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    run = dg.DagsterRun(job_name="training_job", run_id="run-a")
    links = tracking.log_training(
        run,
        TrainingSettings(),
        TrainerDevice.resolve(DeviceSettings(accelerator="cpu")),
        sample_tensors,
        HISTORY,
        {},
        checkpoint,
        [],
    )
    copied = _artifacts(MlflowClient(uri), links["mlflow_run_id"].value, "checkpoint")
    assert copied == ({"checkpoint/model.pt"} if every_checkpoint else set())
