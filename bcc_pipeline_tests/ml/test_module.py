import pytest
import torch

from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline_tests.conftest import tiny_net


def _module() -> BrainMRIClassifier:
    return BrainMRIClassifier(tiny_net(), ["a", "b", "c"], 1e-3, 16, train_on_features=True)


def test_adam_steps_the_head_alone_with_its_fused_kernel_on_the_cpu():
    module = _module()
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"] is True
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in module.net.head.parameters()}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_adam_is_fused_on_a_gpu():
    assert _module().cuda().configure_optimizers().defaults["fused"] is True
