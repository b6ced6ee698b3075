"""Attention across the channels of a step: shapes, no hidden value reaches the output, steps are independent."""

import torch

from tgatunet.model.channel_attention import ChannelAttention
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet


def _layer():
    torch.manual_seed(0)
    return ChannelAttention(channels=5, dim=12, token_dim=8, heads=2).eval()


def test_shape_and_a_step_with_nothing_visible_stays_finite():
    visible = torch.rand(3, 7, 5) > 0.4
    visible[0, 2] = False
    out = _layer()(torch.randn(3, 7, 5), visible)
    assert out.shape == (3, 7, 12) and torch.isfinite(out).all()


def test_hidden_values_cannot_reach_the_output_through_the_layer_or_the_model():
    values, visible = torch.randn(2, 20, 5), torch.rand(2, 20, 5) > 0.4
    changed = values.clone()
    changed[~visible] = 1e4
    layer = _layer()
    torch.testing.assert_close(layer(values, visible), layer(changed, visible))
    torch.manual_seed(0)
    model = TGATUNet(ModelSpec(5, 3, hidden_channels=16, dropout=0.0, channel_attention=True)).eval()
    for a, b in zip(model(values, visible), model(changed, visible)):
        torch.testing.assert_close(a, b)


def test_each_step_mixes_its_own_channels_only():
    layer = _layer()
    values, visible = torch.randn(1, 6, 5), torch.ones(1, 6, 5, dtype=torch.bool)
    changed = values.clone()
    changed[0, 3] += 5.0
    diff = (layer(values, visible) - layer(changed, visible)).abs().sum(-1)[0]
    assert diff[3] > 0 and (diff[[0, 1, 2, 4, 5]] == 0).all()
