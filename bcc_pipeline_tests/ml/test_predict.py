from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bcc_pipeline.data.images import model_input
from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.checkpoint import CheckpointError
from bcc_pipeline.ml.network import build_network
from bcc_pipeline.ml.predict import predict_files
from bcc_pipeline_tests.conftest import CLASSES, save_tiny_checkpoint, tiny_net
from bcc_pipeline_tests.data.test_images import FUZZ_SEEDS, mutated

UNUSUAL = Normalization(mean=(0.1, 0.5, 0.9), std=(0.5, 0.1, 0.3))
STATUSES = {"empty", "not_an_image", "unreadable", "too_large"}


@pytest.fixture(scope="module")
def unusual_net():
    """A network whose stored normalisation is far from ImageNet's."""
    torch.manual_seed(0)
    return build_network(len(CLASSES), 32, "vit_tiny", "none", 0, UNUSUAL).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, unusual_net):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", unusual_net)


def _scan(path, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 255, (100, 80), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_predict_normalises_with_the_stored_statistics(checkpoint, unusual_net, tmp_path):
    path, net = checkpoint, unusual_net
    scan = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 80), np.uint8)).save(scan)
    pixels = torch.from_numpy(model_input(scan.read_bytes(), 32))[None].float() / 255
    mean = torch.tensor(UNUSUAL.mean).view(1, 3, 1, 1)
    std = torch.tensor(UNUSUAL.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(net.head(net.backbone((pixels - mean) / std)), dim=1)[0]
    (result,) = predict_files(path, [scan], uncertain_below=0.6)
    probabilities = torch.tensor([result["probabilities"][name] for name in CLASSES])
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)


def test_predict_reports_bad_files_with_their_status_and_goes_on(checkpoint, tmp_path):
    good = _scan(tmp_path / "scan.png")
    bad = tmp_path / "broken.jpg"
    bad.write_text("<html>")
    results = list(
        predict_files(checkpoint, [good, bad, tmp_path / "missing.jpg"], uncertain_below=0.6)
    )
    assert [r["path"] for r in results] == [str(good), str(bad), str(tmp_path / "missing.jpg")]
    first = results[0]
    assert first["prediction"] in CLASSES
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert (
        results[1]["status"] == "not_an_image" and "text starting '<html>'" in results[1]["error"]
    )
    assert results[2]["status"] == "unreadable" and "No such file" in results[2]["error"]


def test_predict_goes_on_after_empty_and_corrupt_files(checkpoint, tmp_path):
    empty, corrupt = tmp_path / "empty.jpg", tmp_path / "corrupt.png"
    empty.write_bytes(b"")
    png = bytearray(FUZZ_SEEDS["png"])
    png[35] = 0  # Pillow raises SyntaxError on this one
    corrupt.write_bytes(png)
    good = _scan(tmp_path / "scan.png")
    results = list(predict_files(checkpoint, [empty, corrupt, good], uncertain_below=0.6))
    assert (results[0]["status"], results[0]["error"]) == ("empty", "empty file (0 bytes)")
    assert results[1]["status"] == "unreadable" and "PNG" in results[1]["error"]
    assert results[2]["prediction"] in CLASSES


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Corrupt EXIF data" and kin
@settings(max_examples=20, deadline=None)
@given(
    blobs=st.lists(
        st.binary(max_size=200)
        | st.sampled_from(sorted(FUZZ_SEEDS)).flatmap(lambda name: mutated(FUZZ_SEEDS[name])),
        min_size=1,
        max_size=8,
    )
)
def test_any_image_bytes_give_one_result_each_in_order(checkpoint, tmp_path_factory, blobs):
    folder = tmp_path_factory.mktemp("inputs")
    paths = [folder / f"{index}.img" for index in range(len(blobs))]
    for path, blob in zip(paths, blobs, strict=True):
        path.write_bytes(blob)
    results = list(predict_files(checkpoint, paths, uncertain_below=0.6))
    assert [result["path"] for result in results] == [str(path) for path in paths]
    for result in results:
        assert result.get("status") in STATUSES or result["prediction"] in CLASSES


def test_predict_gives_calibrated_probabilities_and_flags_the_uncertain(unusual_net, tmp_path):
    """softmax(logits / T) with the checkpoint's T; uncertain when the top one is below the
    threshold, however close."""
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt", unusual_net, temperature=3.0)
    scan = _scan(tmp_path / "scan.png")
    pixels = torch.from_numpy(model_input(scan.read_bytes(), 32))[None]
    with torch.no_grad():
        expected = torch.softmax(unusual_net(pixels) / 3.0, dim=1)[0]
    top = float(expected.max())
    below, above = (
        next(iter(predict_files(checkpoint, [scan], uncertain_below=threshold)))
        for threshold in (top - 1e-4, top + 1e-4)
    )
    probabilities = torch.tensor([below["probabilities"][name] for name in CLASSES])
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)
    assert below["uncertain"] is False and above["uncertain"] is True
    assert "explanation" not in below


def test_explaining_changes_no_probability(unusual_net, tmp_path):
    """With --explain the explainer's copy of the network classifies, in the forward pass that
    also gives the map: the same numbers, up to the float rounding of computing attention
    with its weights (need_weights) instead of the fused kernel."""
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt", unusual_net, temperature=2.0)
    scans = [_scan(tmp_path / f"scan{i}.png", seed=i) for i in range(3)]
    plain = list(predict_files(checkpoint, scans, uncertain_below=0.6))
    explained = list(
        predict_files(checkpoint, scans, uncertain_below=0.6, explain_dir=tmp_path / "maps")
    )
    for without, with_map in zip(plain, explained, strict=True):
        assert Path(with_map.pop("explanation")).is_file()
        probabilities = with_map.pop("probabilities")
        assert probabilities == pytest.approx(without.pop("probabilities"), abs=1e-6)
        assert with_map == without


def test_weights_that_give_nan_are_a_checkpoint_error_not_a_nan_probability(tmp_path):
    net = tiny_net()
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    checkpoint = save_tiny_checkpoint(tmp_path / "model.pt", net)
    scan = _scan(tmp_path / "scan.png")
    with pytest.raises(CheckpointError, match="gives no probabilities .*scan.png: its weights"):
        list(predict_files(checkpoint, [scan], uncertain_below=0.6))


def test_a_long_legal_file_name_gets_its_map_and_the_images_after_it_too(checkpoint, tmp_path):
    scans = [_scan(tmp_path / f"{'脑' * 78}.png"), _scan(tmp_path / "zz_after.png", seed=1)]
    maps = tmp_path / "maps"
    results = list(predict_files(checkpoint, scans, uncertain_below=0.6, explain_dir=maps))
    assert [result["path"] for result in results] == list(map(str, scans))
    assert all(Path(result["explanation"]).is_file() for result in results)
    assert sorted(maps.iterdir()) == sorted(Path(result["explanation"]) for result in results)
