import pytest
import torch

from bcc_pipeline.ml import devices
from bcc_pipeline.ml.devices import DeviceConfigError, TrainerDevice
from bcc_pipeline.ml.settings import DeviceSettings

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour without a GPU")


@no_gpu
def test_missing_gpu_is_an_error_naming_what_is_available():
    with pytest.raises(DeviceConfigError, match=r"no CUDA GPU.*Available: cpu"):
        TrainerDevice.resolve(DeviceSettings(accelerator="gpu"))


@no_gpu
def test_auto_falls_back_to_cpu():
    device = TrainerDevice.resolve(DeviceSettings())
    assert device.accelerator in ("cpu", "mps")
    assert device.world_size == 1


def test_several_cpu_processes_use_the_spawn_launcher(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    device = TrainerDevice.resolve(DeviceSettings(accelerator="cpu", devices="2", strategy="ddp"))
    assert device.strategy == "ddp_spawn"
    assert device.world_size == 2


def test_torchrun_keeps_plain_ddp(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    device = TrainerDevice.resolve(
        DeviceSettings(accelerator="cpu", devices="2", strategy="ddp", num_nodes=2)
    )
    assert device.strategy == "ddp"
    assert device.world_size == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accelerator": "tpu"}, "accelerator must be one of auto, cpu, gpu, mps; got 'tpu'"),
        ({"accelerator": "cpu", "devices": "two"}, "devices must be"),
        ({"accelerator": "cpu", "devices": "0"}, "at least 1"),
        ({"accelerator": "cpu", "precision": "8-bit"}, "precision must be one of 32-true, "),
        ({"accelerator": "cpu", "precision": "16-mixed"}, "needs a GPU"),
        ({"accelerator": "cpu", "num_nodes": 0}, "num_nodes must be at least 1"),
        ({"accelerator": "cpu", "devices": "0,1"}, "needs accelerator gpu"),
    ],
)
def test_bad_settings_are_said_plainly(kwargs, message):
    with pytest.raises(DeviceConfigError, match=message):
        TrainerDevice.resolve(DeviceSettings(**kwargs))


@pytest.mark.parametrize(("fast", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_inference_dtype_is_bfloat16_only_where_the_cpu_runs_it_natively(
    monkeypatch, fast, expected
):
    monkeypatch.setattr(devices, "cpu_has_fast_bfloat16", lambda: fast)
    assert TrainerDevice.resolve(DeviceSettings(accelerator="cpu")).inference_dtype == expected


@pytest.mark.parametrize(
    ("given", "parsed"),
    [(2, 2), ("2", 2), ([0, 1], [0, 1]), ("0,1", [0, 1]), ("[0, 2]", [0, 2]), ("auto", "auto")],
)
def test_devices_are_read_in_every_form_lightning_takes(given, parsed):
    assert devices.parse_devices(given) == parsed


@pytest.mark.parametrize("given", [0, -1, "two", [0, 0], [-1], [], True, 1.5, {"a": 1}])
def test_impossible_devices_are_refused_naming_the_setting(given):
    with pytest.raises(DeviceConfigError) as error:
        devices.parse_devices(given)
    assert error.value.setting == "devices"


def test_lightnings_check_of_the_settings_changes_no_torch_flag():
    deterministic = torch.are_deterministic_algorithms_enabled()
    TrainerDevice.resolve(
        DeviceSettings(accelerator="cpu", devices=2, strategy="ddp")
    ).check_with_lightning()
    assert torch.are_deterministic_algorithms_enabled() == deterministic
