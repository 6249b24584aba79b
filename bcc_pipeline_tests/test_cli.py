"""`bcc-pipeline` as a user runs it, in a subprocess."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.conftest import save_tiny_checkpoint, small_disk

CLI = str(Path(sys.executable).parent / "bcc-pipeline")
REPO = Path(__file__).resolve().parent.parent


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def test_predict_stops_quietly_when_its_reader_goes_away(sample_root, tmp_path):
    """`predict ... | head -1`: no traceback, and 141 (128 + SIGPIPE) as a shell reports a
    Unix tool that a closed pipe stopped."""
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    images = [str(sorted(sample_root.rglob("*.jpg"))[0])] * 1000  # more than a pipe holds
    command = [CLI, "predict", "--checkpoint", str(checkpoint), *images]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(process.stdout.readline())["path"] == images[0]
    process.stdout.close()
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_predict_onto_a_full_disk_is_one_clear_line(sample_root, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    image = str(sorted(sample_root.rglob("*.jpg"))[0])
    with open("/dev/full", "w") as full:
        completed = subprocess.run(
            [CLI, "predict", "--checkpoint", str(checkpoint), image],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert completed.returncode == 2
    assert completed.stderr == "error: cannot write the results: No space left on device\n"


def test_predict_prints_valid_utf8_json_for_a_file_name_that_is_not_utf8(sample_root, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    odd = tmp_path / os.fsdecode(b"scan\xff.jpg")
    shutil.copyfile(sorted(sample_root.rglob("*.jpg"))[0], odd)
    missing = tmp_path / os.fsdecode(b"gone\xfe.jpg")
    completed = subprocess.run(
        [CLI, "predict", "--checkpoint", str(checkpoint), str(odd), str(missing)],
        capture_output=True,
        timeout=300,
    )
    assert completed.returncode == 1, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.decode("utf-8").splitlines()]
    assert [line["path"] for line in lines] == [
        f"{tmp_path}/scan\\xff.jpg",
        f"{tmp_path}/gone\\xfe.jpg",
    ]
    assert lines[0]["prediction"] in lines[0]["probabilities"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"backbone": "vit_small"}, "names backbone 'vit_small' (image_size 32, "),
        ({"temperature": 0.0}, "is a damaged checkpoint: its temperature 0.0 is not a positive"),
        ({"temperature": float("nan")}, "its temperature nan is not a positive finite number"),
    ],
)
def test_predict_with_a_checkpoint_it_cannot_use_is_one_clear_line(
    sample_root, tmp_path, fields, says
):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt", **fields)
    image = str(sorted(sample_root.rglob("*.jpg"))[0])
    completed = _run("predict", "--checkpoint", str(checkpoint), image, cwd=tmp_path)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith(f"error: {checkpoint} ") and says in completed.stderr
    assert completed.stderr.count("\n") == 1


def test_predict_refuses_a_named_pipe_as_checkpoint_at_once(tmp_path):
    """Reading a pipe that no one writes to would wait forever."""
    os.mkfifo(tmp_path / "model.pt")
    completed = _run("predict", "--checkpoint", "model.pt", "x.jpg", cwd=tmp_path, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr == (
        "error: cannot read checkpoint model.pt: not a regular file (a folder, pipe or device)\n"
    )


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


def test_predict_explain_maps_an_image_with_a_long_legal_name_and_the_images_after_it(
    sample_root, tmp_path
):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt")
    image = sorted(sample_root.rglob("*.jpg"))[0]
    long_name = tmp_path / f"{'脑' * 78}.jpg"  # 238 bytes: legal, near the 255-byte limit
    after = tmp_path / "zz_after.jpg"
    for copy in (long_name, after):
        shutil.copy(image, copy)
    args = ("--checkpoint", str(checkpoint), "--explain", "maps", str(long_name), str(after))
    completed = _run("predict", *args, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(long_name), str(after)]
    assert all((tmp_path / line["explanation"]).is_file() for line in lines)


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
    assert completed.stderr == "error: cannot write to taken: it is a file, not a folder\n"
    assert (tmp_path / "taken").read_text() == "a file"


def test_sample_data_refuses_a_folder_holding_files_and_changes_nothing(tmp_path):
    """The generator's names are the Kaggle download's: into the real data it would replace
    scans with cartoons."""
    scan = tmp_path / "real" / KAGGLE_SUBDIR / "brain_glioma" / "brain_glioma_0001.jpg"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(b"a real scan")
    completed = _run("sample-data", "real", "--per-class", "1", "--size", "32", cwd=tmp_path)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith(f"error: real already holds files ({scan}); ")
    assert completed.stderr.count("\n") == 1
    assert scan.read_bytes() == b"a real scan"
    assert [p.name for p in tmp_path.iterdir()] == ["real"]
    assert [p.name for p in scan.parent.iterdir()] == [scan.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sample_data_leaves_nothing_at_out(tmp_path, sig):
    """Ctrl-C or `kill` while the images are drawn: one line, exit 130, and no half sample
    (nor the hidden folder it was drawn in) that a later run would take for a dataset."""
    command = [CLI, "sample-data", "out", "--per-class", "100000", "--size", "32"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".work-*/out/**/*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (130, "interrupted\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ("sample-data", ""),
        ("predict", "--checkpoint", "", "x.jpg"),
        ("predict", "--checkpoint", "m.pt", "--explain", "", "x.jpg"),
        ("predict", "--checkpoint", "m.pt", ""),
        ("demo", "--config", ""),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, args):
    completed = _run(*args, cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1].endswith(": must not be empty")
    assert list(tmp_path.iterdir()) == []


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


def test_sample_data_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """On a 1 MiB tmpfs (needs root; skipped elsewhere), a sample of 40 images of 512 px."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        completed = _run("sample-data", str(disk / "sample"), cwd=tmp_path)
        left = sorted(path.name for path in disk.iterdir())
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("error: ") and completed.stderr.count("\n") == 1
    assert "Traceback" not in completed.stderr and left == []


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


@pytest.mark.parametrize("value", ["0", "-5"])
def test_demo_refuses_fewer_than_one_image_per_class(tmp_path, value):
    completed = _run("demo", "--per-class", value, cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.endswith(f"argument --per-class: must be at least 1, not {value}\n")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("resources: [\n", "is not valid YAML: expected the node content, but found '<stream end>' "
         "(line 2, column 1)"),
        ("- a\n- b\n", "holds a list, not a run config (a mapping with resources:, ops:)"),
        ("", "names no data_dir and BCC_DATA_DIR is not set: the demo does not put SYNTHETIC "
         "images in the real data's default folder; set either"),
        ("resources: {dataset: {config: {data_dir: {env: BCC_TEST_UNSET}}}}\n",
         'does not fit training_job: Post processing at path root:resources:dataset:config:'
         "data_dir of original value {'env': 'BCC_TEST_UNSET'} failed: You have attempted to "
         'fetch the environment variable "BCC_TEST_UNSET" which is not set.'),
        ("ops: {vit_checkpoint: {config: {learning_rate: 1e-4}}}\n",
         "does not fit training_job: Invalid scalar at path root:ops:vit_checkpoint:config:"
         'learning_rate. Value "1e-4" of type "<class \'str\'>" is not valid for expected type '
         '"Float".'),
    ],
)  # fmt: skip
def test_demo_with_a_run_config_it_cannot_use_is_one_clear_line(tmp_path, text, says):
    (tmp_path / "run.yaml").write_text(text)
    completed = _run("demo", "--config", "run.yaml", cwd=tmp_path)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("error: run config run.yaml ")
    assert says in completed.stderr and completed.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


@pytest.mark.parametrize(
    ("config", "variable"),
    [
        (REPO / "configs" / "smoke.yaml", "BCC_DATA_DIR"),  # no data_dir: the resource's default
        (Path("run.yaml"), "BCC_TEST_DATA"),  # data_dir: {env: BCC_TEST_DATA}
    ],
)
def test_demo_generates_into_the_data_dir_the_job_will_read(tmp_path, config, variable):
    """Where the job reads (an environment variable here) is where the sample goes: a file
    in the way makes that visible, and stops the demo with one line before any run."""
    (tmp_path / "run.yaml").write_text(
        "resources: {dataset: {config: {data_dir: {env: BCC_TEST_DATA}}}}\n"
    )
    (tmp_path / "taken").write_text("a file")
    data_dir = tmp_path / "taken" / "data"
    completed = _run("demo", "--config", str(config), cwd=tmp_path, env={variable: str(data_dir)})
    assert completed.returncode == 2
    assert completed.stdout == f"generating the SYNTHETIC sample dataset in {data_dir} ...\n"
    assert (
        completed.stderr
        == f"error: cannot write to {data_dir.parent}: {data_dir.parent} is a file, not a folder\n"
    )


def test_demo_with_dagster_home_missing_is_one_clear_line_before_any_data(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["resources"]["dataset"] = {"config": {"data_dir": str(tmp_path / "sample")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    home = tmp_path / "dagster_home"
    completed = _run("demo", "--config", "run.yaml", cwd=tmp_path, env={"DAGSTER_HOME": str(home)})
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith(f'error: $DAGSTER_HOME "{home}" is not a directory')
    assert completed.stderr.count("\n") == 1
    assert not (tmp_path / "sample").exists()


@pytest.mark.slow
def test_demo_interrupted_while_training_says_so_in_one_line(tmp_path):
    """Dagster catches the Ctrl-C inside a step and fails the run; the demo still reports an
    interruption (exit 130), not a failed run."""
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["resources"]["dataset"] = {"config": {"data_dir": str(tmp_path / "sample")}}
    config["resources"]["artifacts"] = {"config": {"root": str(tmp_path / "artifacts")}}
    config["resources"]["tracking"] = {"config": {"enabled": False}}
    training = config["ops"]["vit_checkpoint"]["config"]
    training.update(max_epochs=1000, early_stopping_patience=1000)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    command = [CLI, "demo", "--config", "run.yaml", "--per-class", "10"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if "vit_checkpoint: epoch 2/" in line:
            process.send_signal(signal.SIGINT)
            break
    output.append(process.stdout.read())
    assert process.wait(timeout=120) == 130
    text = "".join(output)
    assert text.endswith("interrupted\n") and "Traceback" not in text
    assert "demo run failed" not in text
