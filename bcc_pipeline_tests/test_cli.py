"""`bcc-pipeline` as a user runs it, in a subprocess."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

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


def _tiny_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_tiny_checkpoint(path)


def test_predict_names_the_cause_of_each_bad_image_and_goes_on(sample_root, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "model.pt")
    empty, text, corrupt = tmp_path / "empty.jpg", tmp_path / "notes.png", tmp_path / "bad.png"
    empty.write_bytes(b"")
    text.write_text("patient notes")
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 80).save(buffer, "PNG")
    corrupt.write_bytes(buffer.getvalue()[:60])
    good = sorted(sample_root.rglob("*.jpg"))[0]
    images = [empty, text, corrupt, good]
    completed = _run("predict", "--checkpoint", str(checkpoint), *map(str, images), cwd=tmp_path)
    assert completed.returncode == 1 and completed.stderr == ""
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, images))
    assert [line.get("status") for line in lines] == ["empty", "not_an_image", "unreadable", None]
    assert lines[0]["error"] == "empty file (0 bytes)"
    assert "text starting 'patient notes'" in lines[1]["error"]
    assert "object at 0x" not in completed.stdout
    assert lines[3]["prediction"] in lines[3]["probabilities"]


def test_predict_accepts_the_production_pointer_as_checkpoint(sample_root, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "production_model" / "run1" / "model.pt")
    pointer = tmp_path / "production_model" / "current.json"
    pointer.write_text(json.dumps({"checkpoint": str(checkpoint), "run_id": "run1"}))
    image = str(sorted(sample_root.rglob("*.jpg"))[0])
    completed = _run("predict", "--checkpoint", str(pointer), image, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["prediction"] in {
        "brain_glioma",
        "brain_menin",
        "brain_tumor",
    }


def test_predict_with_a_text_file_as_checkpoint_says_so_in_one_line(tmp_path):
    notes = tmp_path / "model.pt"
    notes.write_text("not a checkpoint")
    completed = _run("predict", "--checkpoint", str(notes), "x.jpg", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr == (
        f"error: {notes} is not a checkpoint: it is text starting 'not a checkpoint'\n"
    )


def test_predict_explain_writes_one_map_per_image_and_still_one_json_line_each(
    sample_root, tmp_path
):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt", temperature=2.0)
    images = sorted(sample_root.rglob("*.jpg"))[:3]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    maps = tmp_path / "maps"
    args = ("--checkpoint", str(checkpoint), "--explain", str(maps), "--uncertain-below", "0.9")
    completed = _run("predict", *args, *map(str, [*images, bad]), cwd=tmp_path)
    assert completed.returncode == 1, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, [*images, bad]))
    assert sorted(maps.iterdir()) == sorted(Path(line["explanation"]) for line in lines[:3])
    for line in lines[:3]:
        with Image.open(line["explanation"]) as figure:
            assert figure.format == "PNG"
        # An untrained model over 3 classes is never 90% sure once calibrated.
        assert line["uncertain"] is True
    assert "explanation" not in lines[3] and lines[3]["status"] == "not_an_image"


def test_predict_into_an_unwritable_explain_folder_is_one_clear_line(sample_root, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    (tmp_path / "taken").write_text("a file")
    image = str(sorted(sample_root.rglob("*.jpg"))[0])
    completed = _run(
        "predict", "--checkpoint", str(checkpoint), "--explain", "taken/maps", image, cwd=tmp_path
    )
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr == "error: cannot write to taken/maps: taken is a file, not a folder\n"


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_predict_refuses_an_uncertainty_threshold_that_is_no_probability(tmp_path, value):
    completed = _run("predict", "--checkpoint", "m.pt", "--uncertain-below", value, "x.jpg",
                     cwd=tmp_path)  # fmt: skip
    assert completed.returncode == 2
    assert "argument --uncertain-below:" in completed.stderr.splitlines()[-1]


def test_sample_data_into_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "taken").write_text("a file")
    completed = _run("sample-data", "taken", "--per-class", "1", "--size", "32", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: cannot write to taken/")
    assert completed.stderr.endswith("taken is a file, not a folder\n")
    assert completed.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--per-class", "0", "argument --per-class: must be at least 1, not 0"),
        ("--per-class", "-3", "argument --per-class: must be at least 1, not -3"),
        ("--size", "8", "argument --size: must be from 32 to 4096, not 8"),
        ("--seed", "-1", "argument --seed: must be at least 0, not -1"),
        ("--per-class", "ten", "argument --per-class: 'ten' is not a whole number"),
    ],
)
def test_sample_data_refuses_numbers_it_cannot_draw(tmp_path, option, value, message):
    completed = _run("sample-data", "out", option, value, cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.strip().endswith(message)
    assert not (tmp_path / "out").exists()


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
    store = tmp_path / "artifacts" / "mlflow" / "mlflow.db"
    assert f"mlflow ui --backend-store-uri sqlite:///{store} --host 127.0.0.1" in output
    assert "Creating initial MLflow database tables" not in output
    assert json.loads(report.read_text())["n_test"] == 3
    assert len(list((tmp_path / "sample" / KAGGLE_SUBDIR).glob("*/*.jpg"))) == 30


def test_demo_without_its_config_says_so(tmp_path):
    completed = _run("demo", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert completed.returncode == 2
    assert "not found" in completed.stderr and "Traceback" not in completed.stderr
