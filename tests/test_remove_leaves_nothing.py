"""`remove()` leaves the model exactly as it was: no attribute, hook, registry or forward left behind."""

import pytest
import torch

from tuner.apply_config import apply

CONFIGS = {
    "tome": {"ratio": 0.5},
    "catome": {"threshold": 0.7, "checkpoints": [0, 2]},
    "deepcache": {"interval": 3},
    "frdiff": {"interval": 2, "mixing": False},
    "quant": {"weight_bits": 8},
}


def module_state(unet: torch.nn.Module) -> dict:
    return {name: (sorted(vars(m)), dict(m._forward_pre_hooks), dict(m._forward_hooks),
                   {k: id(v) for k, v in m._modules.items()})
            for name, m in unet.named_modules()}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_remove_restores_every_module(method, sd15_tiny_unet):
    before = module_state(sd15_tiny_unet)
    x = torch.randn(1, 4, 8, 8)
    ctx = torch.randn(1, 3, 32)
    handle = apply(sd15_tiny_unet, {method: CONFIGS[method]})
    with torch.no_grad():
        for t in (900, 500):  # a forward, so lazily created state exists too
            sd15_tiny_unet(x, t, encoder_hidden_states=ctx)
    handle.remove()
    assert module_state(sd15_tiny_unet) == before


@pytest.fixture
def sd15_tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).eval()
