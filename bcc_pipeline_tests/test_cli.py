"""`bcc-pipeline` as a user runs it, in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.conftest import save_tiny_checkpoint

CLI = str(Path(sys.executable).parent / "bcc-pipeline")
REPO = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sample_data_writes_the_kaggle_layout(tmp_path):
    completed = _run("sample-data", "out", "--per-class", "3", "--size", "64", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "SYNTHETIC" in completed.stdout
    images = sorted((tmp_path / "out" / KAGGLE_SUBDIR).glob("*/*.jpg"))
    assert len(images) == 9
    assert images[0].name == "brain_glioma_0001.jpg"


def test_predict_prints_a_json_line_per_image_and_fails_for_bad_ones(sample_root, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    good = sorted(sample_root.rglob("*.jpg"))[:2]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    completed = _run(
        "predict", "--checkpoint", str(checkpoint), *map(str, good), str(bad), cwd=tmp_path
    )
    assert completed.returncode == 1
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["path"] for line in lines] == [*map(str, good), str(bad)]
    assert all(line["prediction"] in line["probabilities"] for line in lines[:2])
    assert "error" in lines[2]

    ok = _run("predict", "--checkpoint", str(checkpoint), str(good[0]), cwd=tmp_path)
    assert ok.returncode == 0


def test_predict_with_a_missing_checkpoint_is_one_clear_line(tmp_path):
    completed = _run("predict", "--checkpoint", str(tmp_path / "none.pt"), "x.jpg", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error:")
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_demo_generates_the_sample_and_prints_the_report(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["resources"]["dataset"] = {"config": {"data_dir": str(tmp_path / "sample")}}
    config["resources"]["artifacts"] = {"config": {"root": str(tmp_path / "artifacts")}}
    config_file = tmp_path / "demo.yaml"
    config_file.write_text(yaml.safe_dump(config))
    completed = _run("demo", "--config", str(config_file), "--per-class", "10", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "SYNTHETIC demo data: test accuracy" in completed.stdout
    report = Path(completed.stdout.split("report.json: ")[1].split()[0])
    assert (report.parent / "report.md").is_file()
    output = completed.stdout + completed.stderr
    assert "vit_checkpoint: epoch 2/2" in output, "one progress line per epoch"
    assert " - DEBUG - " not in output and "STEP_START" not in output
    assert len(output.splitlines()) < 60, "the demo's output fits on a screen"
    assert json.loads(report.read_text())["n_test"] == 3
    assert len(list((tmp_path / "sample" / KAGGLE_SUBDIR).glob("*/*.jpg"))) == 30


def test_demo_without_its_config_says_so(tmp_path):
    completed = _run("demo", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert completed.returncode == 2
    assert "not found" in completed.stderr and "Traceback" not in completed.stderr
