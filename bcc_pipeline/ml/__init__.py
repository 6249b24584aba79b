"""Plain PyTorch/Lightning: backbones, model, data module, feature cache, training, evaluation."""
