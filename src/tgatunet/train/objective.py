"""Masked-modality modelling: what to hide, and losses only where truth exists.

Training hides some observed values and asks the model to reconstruct them. Four kinds of hiding, combined:

* **pattern**: the whole channel set that some source *needs* (e.g. all three gyroscope axes), so the model practises
  exactly the completion it will be asked for;
* **channel**: other observed channels, whole window;
* **gap**: a contiguous run of steps of an observed channel (a sensor drop-out);
* **step**: single observed values.

Only hidden *observed* values are targets: a value that was never measured (a ``need`` channel of a source that lacks
it, or a NaN) is never in a loss.

Values completed by the dynamic need update (``filled``) are inputs like observed ones (visible unless hidden), but
never targets: the model is not trained to reproduce its own earlier guesses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contiguous_gaps(B: int, T: int, C: int, prob: float, max_length: int, rand, device: torch.device) -> torch.Tensor:
    """``[B, T, C]`` bool: in each (window, channel) with probability ``prob``, one run of ``1 .. max_length`` steps."""
    start = (rand(B, 1, C) * T).long()  # [B, 1, C]
    length = 1 + (rand(B, 1, C) * max_length).long().clamp_max(max_length - 1)
    t = torch.arange(T, device=device)[None, :, None]  # [1, T, 1]
    return (t >= start) & (t < start + length) & (rand(B, 1, C) < prob)


def sample_hidden(observed: torch.Tensor, patterns: torch.Tensor, pattern_prob: float, channel_prob: float, step_prob: float,
                  generator: torch.Generator | None = None, gap_prob: float = 0.0, gap_max: float = 0.25) -> torch.Tensor:
    """``hidden [B, T, C]`` bool: the values of ``observed [B, T, C]`` to hide (a window that would be left with
    nothing visible hides nothing).

    ``patterns [P, C]``: channel sets that sources need (P may be 0). ``generator``: on ``observed``'s device
    (None: the global one). ``gap_prob``, ``gap_max``: chance that a channel of a window loses one contiguous run
    of steps (a sensor drop-out), and the longest run as a share of the window.
    """
    B, T, C = observed.shape
    dev = observed.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=dev, generator=generator)

    hide = (rand(B, 1, C) < channel_prob) | (rand(B, T, C) < step_prob)  # [B, T, C]
    if gap_prob > 0:
        hide = hide | contiguous_gaps(B, T, C, gap_prob, max(1, round(gap_max * T)), rand, dev)
    if len(patterns):
        pick = (rand(B) * len(patterns)).long().clamp_max(len(patterns) - 1)  # [B]
        use = rand(B) < pattern_prob  # [B]
        hide = hide | (patterns.to(dev)[pick] & use[:, None])[:, None, :]
    hide = hide & observed
    nothing_visible = ~(observed & ~hide).flatten(1).any(dim=1)  # [B]
    return hide & ~nothing_visible[:, None, None]


def sample_inputs(observed: torch.Tensor, filled: torch.Tensor | None, patterns: torch.Tensor, pattern_prob: float, channel_prob: float,
                  step_prob: float, generator: torch.Generator | None = None, gap_prob: float = 0.0,
                  gap_max: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model sees and what it must reconstruct: ``visible, targets [B, T, C]`` bool.

    With ``available = observed | filled`` (``filled``: completed, not observed values, or None) and
    ``hidden = sample_hidden(available, ...)``: ``visible = available & ~hidden`` is the model's input and
    ``targets = hidden & observed`` where the reconstruction loss applies.
    """
    available = observed if filled is None else observed | filled
    hidden = sample_hidden(available, patterns, pattern_prob, channel_prob, step_prob, generator, gap_prob, gap_max)
    return available & ~hidden, hidden & observed


def run_inputs(observed: torch.Tensor, filled: torch.Tensor | None, patterns: torch.Tensor, training,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_inputs` with the probabilities of a run's ``training`` config section."""
    t = training
    return sample_inputs(observed, filled, patterns, t.mask_pattern_prob, t.mask_channel_prob, t.mask_step_prob,
                         generator, t.mask_gap_prob, t.mask_gap_max)


def validation_inputs(observed: torch.Tensor, filled: torch.Tensor | None, patterns: torch.Tensor, training,
                      batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`run_inputs` of validation batch ``batch_idx``: the same hidden values every epoch, so validation
    losses are comparable, and the SAITS peer is selected on the values that select the run."""
    generator = torch.Generator(device=observed.device).manual_seed(training.seed * 100_003 + batch_idx)
    return run_inputs(observed, filled, patterns, training, generator)


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, where: torch.Tensor, kind: str = "mse",
                denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``mse``, ``l1`` or ``huber`` error over the positions ``where`` is True (0, graph kept, if none).

    ``denominator`` replaces the count of ``where``: micro-batches of one step divide by the
    whole batch's count, so that their losses add up to the batch's.
    """
    count = where.sum() if denominator is None else denominator
    err = prediction - target
    if kind == "mse":
        per_value = err**2
    elif kind == "l1":
        per_value = err.abs()
    else:
        per_value = F.huber_loss(prediction, target, reduction="none", delta=1.0)
    # Unobserved targets hold arbitrary fill values: zero their error before summing.
    per_value = torch.where(where, per_value, torch.zeros_like(per_value))
    return per_value.sum() / count.to(per_value.dtype).clamp_min(1.0)


def spread_loss(log_spread: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor, where: torch.Tensor,
                denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of a Laplace distribution with scale ``exp(log_spread)`` around ``prediction``, over
    the positions ``where`` is True: mean of ``log_spread + |target - prediction| / exp(log_spread)`` (``[B, T, C]``
    each; ``denominator`` as in :func:`masked_loss`). Minimised where ``exp(log_spread)`` is the expected absolute
    error; ``prediction`` is taken as fixed (no gradient through it)."""
    count = where.sum() if denominator is None else denominator
    per_value = log_spread + (target - prediction.detach()).abs() * torch.exp(-log_spread)
    per_value = torch.where(where, per_value, torch.zeros_like(per_value))
    return per_value.sum() / count.to(per_value.dtype).clamp_min(1.0)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over labelled windows (label -1 = none; 0 when there is none); ``denominator`` as in
    :func:`masked_loss`. No branch on the labels' values: the host never waits for the device here."""
    count = (labels >= 0).sum() if denominator is None else denominator
    total = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
    return total / count.to(logits.dtype).clamp_min(1.0)
