"""Dropout with 16-bit masks: the rate, the scaling, when it is off, and its random source."""

import pytest
import torch

from tgatunet.model.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=4e-3)  # ~5 standard deviations at p=0.5
    kept = y[y != 0]
    rate = round(p * 2**16) / 2**16  # the drop rate, rounded to 16 bits
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - rate)))
    assert y.mean().item() == pytest.approx(1.0, abs=1e-2)  # expectation kept


def test_off_when_not_training_or_rate_zero():
    x = torch.randn(5, 7)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_same_seed_same_mask_and_odd_sizes():
    x = torch.randn(3, 5, 7)  # 105 elements: not a multiple of the four masks per draw
    torch.manual_seed(3)
    a = dropout(x, 0.4, training=True)
    torch.manual_seed(3)
    b = dropout(x, 0.4, training=True)
    assert torch.equal(a, b)
    assert a.shape == x.shape


def test_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(50, 8, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.where(y == 0, 0.0, 1 / 0.75))


def test_module_follows_train_and_eval():
    layer = Dropout(0.5)
    x = torch.ones(1000)
    assert (layer.train()(x) == 0).any()
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rate_is_unbiased_in_16_bit_floats(dtype):
    # 16-bit floats cannot hold the 16-bit random shares exactly; the rate must not drift with them.
    torch.manual_seed(0)
    kept = dropout(torch.ones(4_000_000, dtype=dtype), 0.1, training=True) != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 1e-3  # ~6 standard deviations
