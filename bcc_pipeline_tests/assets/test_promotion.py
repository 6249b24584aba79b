import json
from pathlib import Path

import dagster as dg

from bcc_pipeline.assets.promotion import production_model
from bcc_pipeline_tests.assets.conftest import resources

NAMES = ["brain_glioma", "brain_menin", "brain_tumor"]


def _candidate(tmp_path: Path, name: str, accuracy: float) -> tuple[str, str]:
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    checkpoint = folder / "model.pt"
    checkpoint.write_bytes(f"weights of {name}".encode())
    report = folder / "report.json"
    report.write_text(
        json.dumps({"accuracy": accuracy, "macro_f1": accuracy, "class_names": NAMES})
    )
    return str(checkpoint), str(report)


def _promote(tmp_path: Path, name: str, accuracy: float, floor: float = 0.8) -> dict:
    """A run whose upstream assets yield a candidate with the given test accuracy."""
    checkpoint, report = _candidate(tmp_path, name, accuracy)

    @dg.asset(name="vit_checkpoint")
    def candidate_checkpoint() -> str:
        return checkpoint

    @dg.asset(name="test_metrics_report")
    def candidate_report() -> str:
        return report

    result = dg.materialize(
        [candidate_checkpoint, candidate_report, production_model],
        resources={
            **resources(tmp_path, tmp_path / "artifacts", accuracy_floor=floor),
            # The stand-ins above take no training config to check.
            "launch_checks": dg.ResourceDefinition.none_resource(),
        },
    )
    metadata = {
        key: value.value
        for key, value in result.asset_materializations_for_node("production_model")[
            0
        ].metadata.items()
    }
    pointer = Path(result.output_for_node("production_model"))
    return {"pointer": json.loads(pointer.read_text()) if pointer.exists() else {}, **metadata}


def test_first_model_is_promoted_when_it_passes_the_gate(tmp_path):
    result = _promote(tmp_path, "first", 0.9)
    assert result["promoted"]
    assert Path(result["pointer"]["checkpoint"]).read_bytes() == b"weights of first"
    assert result["pointer"]["accuracy"] == 0.9


def test_worse_retrain_is_not_promoted_and_says_why(tmp_path):
    _promote(tmp_path, "first", 0.9)
    result = _promote(tmp_path, "worse", 0.85)
    assert not result["promoted"]
    assert "below production's 0.9000" in result["reason"]
    assert Path(result["pointer"]["checkpoint"]).read_bytes() == b"weights of first"


def test_retrain_below_the_floor_is_not_promoted(tmp_path):
    result = _promote(tmp_path, "first", 0.5)
    assert not result["promoted"] and "below the floor" in result["reason"]
    assert result["production_run_id"] == "none yet"


def test_equal_or_better_retrain_replaces_production(tmp_path):
    _promote(tmp_path, "first", 0.9)
    result = _promote(tmp_path, "better", 0.95)
    assert result["promoted"]
    assert Path(result["pointer"]["checkpoint"]).read_bytes() == b"weights of better"
