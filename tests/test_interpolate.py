"""The interpolation path: linear between visible steps, nearest at the edges, the mean where nothing is visible."""

import numpy as np
import torch

from tgatunet.model.interpolate import interpolate_visible


def test_linear_between_visible_steps_nearest_beyond_them_and_zero_without_any():
    values = torch.tensor([[9.0, 1.0, 9.0, 9.0, 4.0, 9.0], [9.0] * 6]).T[None]  # [1, 6, 2]
    visible = torch.tensor([[False, True, False, False, True, False], [False] * 6]).T[None]
    out = interpolate_visible(values, visible)[0]
    assert out[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    assert out[:, 1].tolist() == [0.0] * 6  # a channel hidden for the whole window: the training mean


def test_it_matches_numpy_interp_and_reads_no_hidden_value():
    torch.manual_seed(0)
    values, visible = torch.randn(4, 30, 3), torch.rand(4, 30, 3) > 0.6
    visible[:, 0] = True  # numpy's interp holds the end values as this does; give every channel a first step
    out = interpolate_visible(values, visible)
    for b in range(4):
        for c in range(3):
            seen = visible[b, :, c].numpy()
            want = np.interp(np.arange(30), np.flatnonzero(seen), values[b, seen, c].numpy())
            np.testing.assert_allclose(out[b, :, c].numpy(), want, rtol=1e-5, atol=1e-6)
    changed = values.clone()
    changed[~visible] = 1e4
    torch.testing.assert_close(interpolate_visible(changed, visible), out)
