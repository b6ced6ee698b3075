"""The masked-modality objective: targets are only hidden observed values."""

import torch

from tgatunet.train.objective import classification_loss, masked_loss, sample_hidden


def _observed(B=6, T=10, C=4):
    observed = torch.ones(B, T, C, dtype=torch.bool)
    observed[:3, :, 3] = False  # channel 3 is a need channel of the first three windows' source
    observed[0, 2:5, 1] = False  # NaNs
    return observed


def test_hidden_values_are_observed_and_some_stay_visible():
    torch.manual_seed(0)
    observed = _observed()
    patterns = torch.tensor([[False, False, True, True]])
    for _ in range(50):
        hidden = sample_hidden(observed, patterns, 0.9, 0.5, 0.3)
        assert not (hidden & ~observed).any()
        visible = observed & ~hidden
        assert visible.flatten(1).any(dim=1).all()


def test_pattern_hides_the_whole_needed_channel_set():
    torch.manual_seed(1)
    observed = torch.ones(4, 8, 4, dtype=torch.bool)
    patterns = torch.tensor([[False, True, True, False]])
    hidden = sample_hidden(observed, patterns, pattern_prob=1.0, channel_prob=0.0, step_prob=0.0)
    assert hidden[..., 1:3].all() and not hidden[..., [0, 3]].any()


def test_loss_ignores_everything_but_hidden_positions():
    torch.manual_seed(2)
    pred = torch.randn(2, 5, 3, requires_grad=True)
    target = torch.randn(2, 5, 3)
    where = torch.rand(2, 5, 3) > 0.5
    for kind in ("mse", "l1", "huber"):
        base = masked_loss(pred, target, where, kind)
        poisoned = target.clone()
        poisoned[~where] = 1e6  # what an unobserved value might hold
        assert torch.allclose(masked_loss(pred, poisoned, where, kind), base)
        (grad,) = torch.autograd.grad(masked_loss(pred, poisoned, where, kind), pred)
        assert torch.isfinite(grad).all()
        assert (grad[~where] == 0).all() and (grad[where] != 0).any()


def test_loss_with_nothing_hidden_is_zero_and_differentiable():
    pred = torch.randn(2, 4, 3, requires_grad=True)
    loss = masked_loss(pred, torch.zeros(2, 4, 3), torch.zeros(2, 4, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()


def test_classification_ignores_unlabelled_windows():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, -1, 2, -1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(classification_loss(logits, labels), expected)
    assert classification_loss(logits, torch.full((4,), -1)).item() == 0.0
