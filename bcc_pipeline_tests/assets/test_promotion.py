"""production_model on real checkpoints and tensors. The models always answer one class (their
head is a bias), so which test images each gets right, and so every count, is known."""

import json
import threading
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from filelock import FileLock

from bcc_pipeline import checks
from bcc_pipeline.assets.promotion import HISTORY_FILE, POINTER_FILE, production_model
from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import split_fingerprint
from bcc_pipeline.data.tensors import TensorSplits, write_tensor_splits
from bcc_pipeline.ml.checkpoint import read_checkpoint, save_checkpoint
from bcc_pipeline.ml.network import build_network
from bcc_pipeline.ml.report_folder import PREDICTIONS_FILE
from bcc_pipeline.resources import QualityGatesResource
from bcc_pipeline.storage import write_parquet
from bcc_pipeline_tests.assets.conftest import resources

NAMES = ["brain_glioma", "brain_menin", "brain_tumor"]
GLIOMA, MENIN = 0, 1
PER_CLASS_IN_TEST = 20
"""The test split: 20 glioma and 20 meningioma images; train and val hold the rest."""


@pytest.fixture(scope="module")
def tensors(sample_root, tmp_path_factory) -> TensorSplits:
    table = scan_folder(sample_root)
    table = table[table["status"] == "ok"].sort_values("path").reset_index(drop=True)
    rank = table.groupby("label").cumcount()
    table["split"] = "train"
    table.loc[(rank < PER_CLASS_IN_TEST) & (table["label"] != "brain_tumor"), "split"] = "test"
    table.loc[rank >= 27, "split"] = "val"
    folder = tmp_path_factory.mktemp("promotion_tensors")
    write_tensor_splits(table, sample_root, folder, 32, split_fingerprint(table))
    return TensorSplits.open(folder)


def _test_digests(tensors: TensorSplits, label: int) -> list[str]:
    labels = tensors.labels("test")
    return [d for d, y in zip(tensors.digests("test"), labels, strict=True) if y == label]


def _model(
    folder: Path,
    answer: int,
    seen: list[str] | None = (),
    names=NAMES,
    run_id="train-run",
    image_size=32,
) -> str:
    """A checkpoint that answers class `answer` for every image and says it trained on `seen`
    (None: a checkpoint from before training digests were stored)."""
    net = build_network(len(names), image_size, "vit_tiny", "none", 0)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(answer), len(names)))
    extra = {"metrics": {"used_feature_cache": False}, "run_id": run_id, "split_fingerprint": "x"}
    if seen is not None:
        extra["seen_sha256"] = {"train": list(seen), "val": []}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model_{answer}.pt"
    return str(
        save_checkpoint(
            path,
            net,
            class_names=names,
            image_size=image_size,
            backbone="vit_tiny",
            weights="none",
            inference_dtype=torch.float32,
            extra=extra,
        )
    )


def _report(
    checkpoint: str, tensors: TensorSplits, accuracy: float, names=NAMES, provenance=None
) -> str:
    """What test_metrics_report writes for a model of _model: report.json with the given
    accuracy, and beside it the model's one answer as its prediction for every test image.
    Its provenance names the checkpoint and split it evaluated, unless given others."""
    folder = Path(checkpoint).parent
    answer = int(read_checkpoint(checkpoint)["state_dict"]["head.bias"].argmax())
    np.save(folder / PREDICTIONS_FILE, np.full(len(tensors.labels("test")), answer))
    path = folder / "report.json"
    evaluated = {"checkpoint": checkpoint, "split_fingerprint": tensors.fingerprint}
    evaluated.update(provenance or {})
    path.write_text(
        json.dumps(
            {
                "accuracy": accuracy,
                "macro_f1": accuracy,
                "class_names": names,
                "n_test": 40,
                "provenance": evaluated,
            }
        )
    )
    return str(path)


def _stubs(checkpoint: str, report: str, tensors: TensorSplits) -> list:
    @dg.asset(name="vit_checkpoint")
    def stub_checkpoint() -> str:
        return checkpoint

    @dg.asset(name="test_metrics_report")
    def stub_report() -> str:
        return report

    @dg.asset(name="preprocessed_tensors")
    def stub_tensors() -> str:
        return str(tensors.folder)

    return [stub_checkpoint, stub_report, stub_tensors]


def _resources(artifacts: Path, **quality) -> dict:
    return {
        **resources(Path("."), artifacts),
        "quality": QualityGatesResource(**{"accuracy_floor": 0.4, **quality}),
        # The stand-ins above take no training config to check.
        "launch_checks": dg.ResourceDefinition.none_resource(),
    }


def _decide(tmp_path: Path, tensors, checkpoint: str, accuracy: float = 0.5, **quality) -> dict:
    """One run of production_model with the given candidate; its metadata and the pointer."""
    result = dg.materialize(
        [*_stubs(checkpoint, _report(checkpoint, tensors, accuracy), tensors), production_model],
        resources=_resources(tmp_path / "artifacts", **quality),
    )
    event = result.asset_materializations_for_node("production_model")[0]
    metadata = {key: value.value for key, value in event.metadata.items()}
    pointer = Path(result.output_for_node("production_model"))
    return {**metadata, "pointer": json.loads(pointer.read_text()) if pointer.exists() else {}}


def _failed_decision(tmp_path: Path, tensors, checkpoint: str, report: str) -> str:
    """production_model on this candidate and report, which must fail: the failure message."""
    result = dg.materialize(
        [*_stubs(checkpoint, report, tensors), production_model],
        resources=_resources(tmp_path / "artifacts"),
        raise_on_error=False,
    )
    return result.failure_data_for_node("production_model").error.message


def _champion(tmp_path, tensors, answer: int, seen=()) -> dict:
    first = _decide(tmp_path, tensors, _model(tmp_path / "champion", answer, seen))
    assert first["promoted"]
    return first


def test_first_model_is_promoted_when_it_passes_the_floor(tmp_path, tensors):
    result = _champion(tmp_path, tensors, GLIOMA)
    assert result["reason"] == "first model: it passes the accuracy floor"
    assert result["n_compared"] == 0 and result["champion_run_id"] == "none"
    copy = Path(result["pointer"]["checkpoint"])
    assert copy.read_bytes() == (tmp_path / "champion" / "model_0.pt").read_bytes()


def test_first_model_below_the_floor_is_refused(tmp_path, tensors):
    result = _decide(tmp_path, tensors, _model(tmp_path / "first", GLIOMA), accuracy=0.3)
    assert not result["promoted"] and "below the floor" in result["reason"]
    assert result["production_run_id"] == "none yet" and result["pointer"] == {}


def test_both_models_are_scored_on_the_same_test_images(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA)
    result = _decide(tmp_path, tensors, _model(tmp_path / "challenger", MENIN))
    assert result["n_compared"] == 2 * PER_CLASS_IN_TEST
    assert result["discordant"] == {"champion_only_correct": 20, "challenger_only_correct": 20}
    assert (result["champion_accuracy"], result["challenger_accuracy"]) == (0.5, 0.5)
    assert result["p_value"] == 1.0
    assert result["promoted"], "an equal model replaces production"


def test_champion_is_never_credited_with_test_images_it_trained_on(tmp_path, tensors):
    trained_on = _test_digests(tensors, GLIOMA)[:5]
    _champion(tmp_path, tensors, GLIOMA, seen=trained_on)
    result = _decide(tmp_path, tensors, _model(tmp_path / "challenger", MENIN))
    assert result["dropped_seen_by_champion"] == 5 and result["n_compared"] == 35
    assert result["champion_accuracy"] == 15 / 35 and result["challenger_accuracy"] == 20 / 35
    assert result["promoted"]


@pytest.mark.parametrize(("dropped", "promoted"), [(3, True), (4, False)])
def test_worse_challenger_is_refused_beyond_the_margin_only(tmp_path, tensors, dropped, promoted):
    """The champion (always menin) trained on `dropped` glioma test images, which the
    challenger (always glioma) gets right: dropping them leaves it `dropped` images behind.
    The margin 0.1 allows 3.7 images of 37 and 3.6 of 36."""
    _champion(tmp_path, tensors, MENIN, seen=_test_digests(tensors, GLIOMA)[:dropped])
    result = _decide(
        tmp_path, tensors, _model(tmp_path / "challenger", GLIOMA), non_inferiority_margin=0.1
    )
    assert result["promoted"] == promoted
    in_use = Path(result["pointer"]["checkpoint"]).read_bytes()
    assert (
        in_use
        == (
            tmp_path / ("challenger/model_0.pt" if promoted else "champion/model_1.pt")
        ).read_bytes()
    )
    if not promoted:
        assert "more than the margin 0.1000" in result["reason"]
        assert result["champion_run_id"] == result["production_run_id"]


def test_significantly_worse_challenger_within_the_margin_is_refused(tmp_path, tensors):
    _champion(tmp_path, tensors, MENIN, seen=_test_digests(tensors, GLIOMA)[:12])
    challenger = _model(tmp_path / "challenger", GLIOMA)
    result = _decide(
        tmp_path, tensors, challenger, non_inferiority_margin=0.5, min_images_compared=28
    )
    assert result["discordant"] == {"champion_only_correct": 20, "challenger_only_correct": 8}
    assert result["p_value"] < 0.05 and not result["promoted"]
    assert "exact McNemar" in result["reason"]


@pytest.mark.parametrize(("minimum", "promoted"), [(6, False), (5, True)])
def test_a_better_challenger_on_too_few_untouched_images_does_not_replace_production(
    tmp_path, tensors, minimum, promoted
):
    seen = _test_digests(tensors, GLIOMA) + _test_digests(tensors, MENIN)[5:]
    _champion(tmp_path, tensors, GLIOMA, seen=seen)
    challenger = _model(tmp_path / "challenger", MENIN, run_id="better")
    result = _decide(tmp_path, tensors, challenger, min_images_compared=minimum)
    assert result["n_compared"] == 5 and result["promoted"] is promoted
    if not promoted:
        assert result["reason"].startswith(
            "only 5 of this run's 40 test images are untouched by the production model (it "
            "trained or validated on the other 35: the split was re-drawn, or the folder shrank)"
        )
        assert "resources.quality.config.min_images_compared (6)" in result["reason"]


def test_a_test_split_smaller_than_the_minimum_is_said_as_such(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA)
    challenger = _model(tmp_path / "challenger", MENIN, run_id="better")
    result = _decide(tmp_path, tensors, challenger, min_images_compared=41)
    assert not result["promoted"] and result["n_compared"] == 40
    assert result["reason"].startswith(
        "this run's test split holds only 40 images, fewer than "
        "resources.quality.config.min_images_compared (41)"
    )


def test_better_challenger_replaces_production(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA, seen=_test_digests(tensors, GLIOMA)[:1])
    challenger = _model(tmp_path / "challenger", MENIN, run_id="better")
    result = _decide(tmp_path, tensors, challenger)
    assert result["promoted"] and result["challenger_accuracy"] > result["champion_accuracy"]
    assert result["production_run_id"] == result["pointer"]["run_id"] != result["champion_run_id"]


def test_other_class_names_are_refused_with_the_reason(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA)
    other = ["a", "b", "c"]
    folder = tmp_path / "renamed"
    checkpoint = _model(folder, MENIN, names=other)
    result = dg.materialize(
        [
            *_stubs(checkpoint, _report(checkpoint, tensors, 0.9, names=other), tensors),
            production_model,
        ],
        resources=_resources(tmp_path / "artifacts"),
    )
    event = result.asset_materializations_for_node("production_model")[0]
    reason = event.metadata["reason"].value
    assert not event.metadata["promoted"].value
    assert "differ from production's" in reason and f"move {POINTER_FILE} aside" in reason


def test_production_model_for_another_image_size_is_not_scored_and_says_why(tmp_path, tensors):
    first = _decide(tmp_path, tensors, _model(tmp_path / "big", GLIOMA, image_size=64))
    assert first["promoted"]
    result = _decide(tmp_path, tensors, _model(tmp_path / "challenger", MENIN))
    assert not result["promoted"] and result["n_compared"] == 0
    assert "takes 64 px images, this run's tensors are 32 px" in result["reason"]


def test_a_report_without_test_predictions_fails_with_what_to_do(tmp_path, tensors):
    checkpoint = _model(tmp_path / "old-report", MENIN)
    report = _report(checkpoint, tensors, 0.5)
    Path(report).with_name(PREDICTIONS_FILE).unlink()
    message = _failed_decision(tmp_path, tensors, checkpoint, report)
    assert "is missing" in message and "re-materialize test_metrics_report" in message


def test_damaged_pointer_fails_with_what_to_do(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA)
    (tmp_path / "artifacts" / "production_model" / POINTER_FILE).write_text("{")
    folder = tmp_path / "next"
    checkpoint = _model(folder, MENIN)
    message = _failed_decision(tmp_path, tensors, checkpoint, _report(checkpoint, tensors, 0.5))
    assert "is damaged" in message and "move it aside" in message


@pytest.mark.parametrize(
    ("provenance", "said"),
    [
        (
            {"checkpoint": "/elsewhere/model.pt"},
            "the report evaluated checkpoint /elsewhere/model.pt",
        ),
        ({"split_fingerprint": "0123abcd"}, "the report scored the test images of split 0123abcd"),
    ],
)
def test_a_report_of_another_model_or_split_is_not_promoted_on(tmp_path, tensors, provenance, said):
    """Assets materialized apart: a new vit_checkpoint alone must not ride on the report of
    the model before it, nor predictions on other images' labels."""
    first = _champion(tmp_path, tensors, GLIOMA)
    checkpoint = _model(tmp_path / "unevaluated", MENIN)
    report = _report(checkpoint, tensors, 0.9, provenance=provenance)
    message = _failed_decision(tmp_path, tensors, checkpoint, report)
    assert said in message and "re-materialize test_metrics_report" in message
    pointer = tmp_path / "artifacts" / "production_model" / POINTER_FILE
    assert json.loads(pointer.read_text()) == first["pointer"]


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("garbage\n\x00,,\n", "has no column promoted, champion_accuracy, challenger_accuracy"),
        ('promoted,champion_accuracy,challenger_accuracy\n"unclosed', "cannot be read as CSV"),
    ],
)
def test_a_damaged_history_stops_the_run_before_anything_is_promoted(
    tmp_path, tensors, damage, said
):
    first = _champion(tmp_path, tensors, GLIOMA)
    folder = tmp_path / "artifacts" / "production_model"
    (folder / HISTORY_FILE).write_text(damage)
    checkpoint = _model(tmp_path / "better", MENIN)
    message = _failed_decision(tmp_path, tensors, checkpoint, _report(checkpoint, tensors, 0.9))
    assert said in message and "Nothing was promoted" in message and "move it aside" in message
    assert json.loads((folder / POINTER_FILE).read_text()) == first["pointer"]
    assert (folder / HISTORY_FILE).read_text() == damage


@pytest.mark.parametrize(
    ("pointer", "said"),
    [
        ([], "is not a production pointer"),
        ({"checkpoint": "x/model.pt"}, 'it needs "checkpoint" (the model file) and "run_id"'),
    ],
)
def test_a_hand_written_pointer_without_what_promotion_needs_says_so(
    tmp_path, tensors, pointer, said
):
    _champion(tmp_path, tensors, GLIOMA)
    (tmp_path / "artifacts" / "production_model" / POINTER_FILE).write_text(json.dumps(pointer))
    checkpoint = _model(tmp_path / "next", MENIN)
    message = _failed_decision(tmp_path, tensors, checkpoint, _report(checkpoint, tensors, 0.5))
    assert said in message and "move it aside" in message


def test_a_rollback_pointer_naming_its_checkpoint_relative_to_itself_is_read(tmp_path, tensors):
    """As predict reads it: `<run_id>/model.pt` beside current.json."""
    first = _champion(tmp_path, tensors, GLIOMA)
    folder = tmp_path / "artifacts" / "production_model"
    relative = Path(first["pointer"]["checkpoint"]).relative_to(folder)
    (folder / POINTER_FILE).write_text(
        json.dumps({**first["pointer"], "checkpoint": str(relative)})
    )
    result = _decide(tmp_path, tensors, _model(tmp_path / "equal", GLIOMA))
    assert result["n_compared"] > 0 and "cannot be read" not in result["reason"]


def test_champion_without_stored_digests_is_judged_by_its_runs_split(tmp_path, tensors):
    run_id = "legacy-run"
    _champion(tmp_path, tensors, GLIOMA, seen=None)
    result = _decide(tmp_path, tensors, _model(tmp_path / "challenger", MENIN))
    assert not result["promoted"] and "predates stored training digests" in result["reason"]

    # Its run's split file, matching its fingerprint, says what it trained on.
    trained_on = _test_digests(tensors, GLIOMA)[:4]
    table = pd.DataFrame({"sha256": trained_on, "split": "train", "path": trained_on})
    write_parquet(tmp_path / "artifacts" / "stratified_split" / run_id / "split.parquet", table)
    legacy = _model(tmp_path / "legacy", GLIOMA, seen=None, run_id=run_id)
    payload = torch.load(legacy, weights_only=True)
    payload["split_fingerprint"] = split_fingerprint(table)
    torch.save(payload, legacy)
    pointer = tmp_path / "artifacts" / "production_model" / POINTER_FILE
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "checkpoint": legacy}))
    result = _decide(tmp_path, tensors, _model(tmp_path / "challenger", MENIN))
    assert result["dropped_seen_by_champion"] == 4 and result["promoted"]


def test_every_decision_is_kept_in_the_history(tmp_path, tensors):
    _champion(tmp_path, tensors, GLIOMA)
    _decide(tmp_path, tensors, _model(tmp_path / "low", MENIN), accuracy=0.1)
    last = _decide(tmp_path, tensors, _model(tmp_path / "equal", MENIN))
    history = pd.read_csv(tmp_path / "artifacts" / "production_model" / HISTORY_FILE)
    assert history["promoted"].tolist() == [True, False, True]
    assert "below the floor" in history["reason"].iloc[1]
    assert history["n_compared"].tolist() == [0, 40, 40]
    assert last["history_file"] == str(tmp_path / "artifacts" / "production_model" / HISTORY_FILE)
    assert last["history"].count("\n") == 4, "header, rule and three decisions"
    assert last["history_plot"].startswith("![accuracy over retrains](data:image/png;base64,")


def test_a_floor_failure_fails_the_run_after_recording_the_refusal(tmp_path, tensors):
    folder = tmp_path / "low"
    checkpoint = _model(folder, GLIOMA)
    stubs = _stubs(checkpoint, _report(checkpoint, tensors, 0.1), tensors)
    defs = dg.Definitions(
        assets=[*stubs, production_model],
        asset_checks=[checks.accuracy_meets_floor],
        jobs=[dg.define_asset_job("promote", selection=dg.AssetSelection.all())],
        resources=_resources(tmp_path / "artifacts"),
    )
    result = defs.resolve_job_def("promote").execute_in_process(raise_on_error=False)
    assert not result.success
    history = pd.read_csv(tmp_path / "artifacts" / "production_model" / HISTORY_FILE)
    assert history["promoted"].tolist() == [False]
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.check_name == "accuracy_meets_floor"


def test_promotion_waits_for_another_runs_decision(tmp_path, tensors):
    folder = tmp_path / "artifacts" / "production_model"
    folder.mkdir(parents=True)
    finished = threading.Event()

    def promote() -> None:
        _decide(tmp_path, tensors, _model(tmp_path / "candidate", GLIOMA))
        finished.set()

    with FileLock(folder / ".lock"):
        worker = threading.Thread(target=promote)
        worker.start()
        assert not finished.wait(5), "it decided while another run held the lock"
        assert not (folder / POINTER_FILE).exists()
    worker.join(120)
    assert finished.is_set() and (folder / POINTER_FILE).exists()
