"""The two Inception preprocessings (features.inception_preprocessing) on the same images and the
same (random) weights: 'torch_fidelity' equals torch-fidelity's own extractor, 'pytorch_fid' equals
the network fed with pytorch-fid's own resize-and-normalise code, and the two differ."""
import numpy as np
import pytest
import torch
from torch import nn

from cbdm.features import inception_features, pytorch_fid_input, run_on_prepared, save_random_inception_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "weights-inception-random.pth"
    save_random_inception_weights(path)
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)


def torch_fidelity_extractor(weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                       feature_extractor_weights_path=str(weights)).eval()


def pytorch_fid_preprocessing(x01: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's InceptionV3.forward with resize_input and normalize_input on, its blocks
    replaced by the identity: exactly the input its network sees."""
    inception = pytest.importorskip("pytorch_fid.inception")
    model = inception.InceptionV3.__new__(inception.InceptionV3)
    nn.Module.__init__(model)
    model.resize_input, model.normalize_input = True, True
    model.blocks = nn.ModuleList([nn.Identity()])
    model.output_blocks, model.last_needed_block = [0], 0
    return model(x01)[0]


@torch.no_grad()
def test_torch_fidelity_preprocessing_equals_torch_fidelity(weights, images):
    ours, logits = inception_features(images, weights, "cpu", "torch_fidelity")
    theirs, their_logits = torch_fidelity_extractor(weights)(torch.from_numpy(images))
    assert np.array_equal(ours, theirs.double().numpy())
    assert np.array_equal(logits, their_logits.numpy())


@torch.no_grad()
def test_pytorch_fid_preprocessing_equals_pytorch_fid(weights, images):
    x = torch.from_numpy(images)
    prepared = pytorch_fid_preprocessing(x.float() / 255)  # what pytorch-fid's ToTensor gives
    assert torch.equal(pytorch_fid_input(x), prepared)
    expected, _ = run_on_prepared(torch_fidelity_extractor(weights), x, prepared)
    ours, _ = inception_features(images, weights, "cpu", "pytorch_fid")
    # Random weights give features near 1e-8: compare relative to their scale.
    assert np.abs(ours - expected.double().numpy()).max() <= 1e-6 * np.abs(ours).max()


@torch.no_grad()
def test_the_two_preprocessings_differ(weights, images):
    x = torch.from_numpy(images).float()
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    tf1 = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    per_pixel = ((pytorch_fid_input(x.to(torch.uint8)) + 1) * 127.5 - tf1).abs().mean().item()
    assert per_pixel > 1.0  # grey levels out of 255, on average
    a, _ = inception_features(images, weights, "cpu", "torch_fidelity")
    b, _ = inception_features(images, weights, "cpu", "pytorch_fid")
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()
    with pytest.raises(ValueError, match="inception_preprocessing"):
        inception_features(images, weights, "cpu", "clean")
