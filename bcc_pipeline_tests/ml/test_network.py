import numpy as np
import pytest
import torch
import torchvision

from bcc_pipeline.ml.backbones import ALL_BLOCKS, BackboneConfigError, Normalization, check_backbone
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.ml.network import (
    INFERENCE_BATCH,
    ClassifierNet,
    build_network,
    for_inference,
    inference_batch_size,
    inference_copy,
    predict_logits,
)
from bcc_pipeline_tests.conftest import tiny_net

CLASSES = ["a", "b", "c"]
CPU = torch.device("cpu")


def _module(trainable_blocks: int, backbone: str = "vit_tiny", size: int = 32):
    torch.manual_seed(0)
    net = build_network(len(CLASSES), size, backbone, "none", trainable_blocks)
    return BrainMRIClassifier(
        net, CLASSES, learning_rate=1e-3, batch_size=16, train_on_features=False
    )


def _trainable(module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_head_only_trains_just_the_head():
    assert _trainable(_module(0)) == {"net.head.weight", "net.head.bias"}


def test_last_k_blocks_train_with_the_final_norm():
    names = _trainable(_module(2))
    assert any(n.startswith("net.backbone.encoder.layers.encoder_layer_3.") for n in names)
    assert any(n.startswith("net.backbone.encoder.layers.encoder_layer_2.") for n in names)
    assert not any(n.startswith("net.backbone.encoder.layers.encoder_layer_1.") for n in names)
    assert "net.backbone.encoder.ln.weight" in names
    assert "net.backbone.conv_proj.weight" not in names


def test_minus_one_trains_everything():
    module = _module(-1)
    assert _trainable(module) == {name for name, _ in module.named_parameters()}


def test_optimizer_gets_only_trainable_parameters():
    module = _module(0)
    optimizer = module.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 3 * 192 + 3


def test_too_many_blocks_is_a_config_error():
    with pytest.raises(BackboneConfigError, match="exceeds the 4 blocks"):
        _module(5)


@pytest.mark.parametrize("blocks", [0, 1, 3])
def test_cached_prefix_plus_suffix_equals_the_whole_model(blocks):
    module = _module(blocks).eval()
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        whole = module(images)
        split = module.net.from_features(module.net.frozen_features(images))
    assert module.net.cacheable
    torch.testing.assert_close(whole, split)


def test_whole_backbone_training_has_nothing_to_cache():
    assert not _module(-1).net.cacheable
    assert not _module(4).net.cacheable


def test_frozen_blocks_stay_in_eval_mode_while_training():
    module = _module(0, backbone="resnet18", size=64).train()
    assert not module.net.backbone.bn1.training
    assert module.net.head.training
    partly = _module(1, backbone="resnet18", size=64).train()
    assert partly.net.backbone.layer4.training and not partly.net.backbone.layer1.training


def test_the_network_normalises_uint8_images_with_its_statistics():
    net = build_network(
        3, 32, "vit_tiny", "none", 0, Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    )
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expected = torch.tensor([2.5, 2.4, 1.4]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(net.normalize(images), expected)


def test_a_network_ready_for_inference_is_used_as_it_is_and_any_other_copied():
    ready = inference_copy(build_network(3, 32, "vit_tiny", "none", 0), CPU, torch.bfloat16)
    assert for_inference(ready, CPU, torch.bfloat16) is ready
    other_precision = for_inference(ready, CPU, torch.float32)
    assert other_precision is not ready and ready.head.weight.dtype == torch.bfloat16
    training = build_network(3, 32, "vit_tiny", "none", 0).train()
    assert for_inference(training, CPU, torch.float32) is not training and training.training
    half_converted = inference_copy(training, CPU, torch.bfloat16)
    half_converted.mean = half_converted.mean.float()  # one buffer in another precision
    assert for_inference(half_converted, CPU, torch.bfloat16) is not half_converted


def test_inference_copy_never_changes_the_original():
    net = build_network(3, 32, "vit_tiny", "none", 0).train()
    copy = inference_copy(net, torch.device("cpu"), torch.bfloat16)
    assert copy is not net and not copy.training and copy.head.weight.dtype == torch.bfloat16
    assert net.training and net.head.weight.dtype == torch.float32
    same_precision = inference_copy(net, torch.device("cpu"), torch.float32)
    assert same_precision is not net and same_precision.head.weight is not net.head.weight


@pytest.mark.parametrize(
    ("backbone", "image_size", "cpu_batch"),
    [("vit_b_16", 224, 16), ("vit_tiny", 224, 64), ("vit_tiny", 96, 256)],
)
def test_cpu_inference_batches_hold_one_budget_of_token_activations(
    backbone, image_size, cpu_batch
):
    """The fastest batch per image measured on a CPU for each (bench_inference_batch): wide,
    long token sequences in small batches, small ones in large batches, up to a cap."""
    net = build_network(3, image_size, backbone, "none", 0, empty=True)
    assert inference_batch_size(net, torch.device("cpu")) == cpu_batch
    assert inference_batch_size(net, torch.device("cuda")) == INFERENCE_BATCH


def test_a_cnn_is_inferred_in_full_batches_also_on_a_cpu():
    net = build_network(3, 64, "resnet18", "none", 0, empty=True)
    assert inference_batch_size(net, torch.device("cpu")) == INFERENCE_BATCH


def test_without_a_batch_size_predictions_come_in_batches_of_the_networks_size():
    net, seen = tiny_net(), []
    batch = inference_batch_size(net, torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (batch + 5, 3, 32, 32), dtype=np.uint8)

    def forward(net: ClassifierNet, batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return net(batch)

    logits = predict_logits(net, images, torch.device("cpu"), forward=forward)
    assert seen == [batch, 5]
    with torch.no_grad():
        torch.testing.assert_close(logits, net.eval()(torch.from_numpy(images)))
    assert predict_logits(net, images[:0], torch.device("cpu")).shape == (0, 3)


def test_predictions_read_their_batches_from_the_file_not_through_the_map(
    sample_tensors, no_reads_through_the_map
):
    images = sample_tensors.images("test")
    net = tiny_net().eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(np.array(images)))
    logits = predict_logits(net, images, torch.device("cpu"), batch_size=4)
    torch.testing.assert_close(logits, expected)


NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", torchvision.models.list_models(torchvision.models))
def test_every_torchvision_classifier_trains_and_predicts_or_is_refused_at_launch(backbone):
    """README: any torchvision classification model. On the meta device (shapes, no numbers):
    head only with the frozen prefix cached, and everything trainable, at its smallest
    pretrained size or 224."""
    size = max(224, torchvision.models.get_model_weights(backbone).DEFAULT.meta["min_size"][0])
    if backbone in NO_LINEAR_HEAD:
        with pytest.raises(BackboneConfigError, match="no Linear classifier layer"):
            check_backbone(backbone, "none", size, 0)
        return
    images = torch.zeros(2, 3, size, size, dtype=torch.uint8, device="meta")
    for trainable_blocks in (0, ALL_BLOCKS):
        check_backbone(backbone, "none", size, trainable_blocks)
        net = build_network(3, size, backbone, "none", trainable_blocks, empty=True).to("meta")
        assert net.train()(images).shape == (2, 3)
        assert net.eval()(images).shape == (2, 3)
        if net.cacheable:
            assert net.from_features(net.frozen_features(images)).shape == (2, 3)
