"""The shipped proxy model meets its quality bar and loads strictly."""

import json

import pytest
import torch

from tuner.errors import TunerError


def test_trained_proxy_generates_recognisable_digits(proxy_pipe):
    from tuner.proxy.classifier import load_classifier

    classes = list(range(10)) * 2
    images = proxy_pipe(classes, list(range(20)), num_inference_steps=50)
    with torch.no_grad():
        pred = load_classifier()(images).argmax(1)
    assert (pred == torch.tensor(classes)).float().mean() >= 0.85


def test_classifier_heldout_accuracy_recorded_and_high():
    from tuner.proxy.model import PROXY_INFO

    assert json.loads(PROXY_INFO.read_text())["classifier_heldout_accuracy"] >= 0.9


def test_weights_that_do_not_match_the_architecture(tmp_path):
    from safetensors.torch import save_file

    from tuner.proxy.model import load_proxy_pipeline

    path = tmp_path / "small.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(2, 2, 3, 3)}, str(path))
    with pytest.raises(TunerError, match="do not match"):
        load_proxy_pipeline("cpu", path)
