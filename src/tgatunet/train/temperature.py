"""Temperature scaling: class probabilities that mean what they say, fitted on the validation windows.

A network trained to classify is usually over-confident on people it never saw. One scalar ``T`` divides the
logits, ``p = softmax(z / T)`` (Guo et al., 2017): the predicted class never changes, only how sure the model says
it is. ``T`` is chosen by the cross-entropy on the validation windows and kept only when it lowers their expected
calibration error (ECE: the mean gap between confidence and accuracy over 15 confidence bins).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from tgatunet.config import Config
from tgatunet.infer.trained import TrainedModel
from tgatunet.train.loaders import make_loader
from tgatunet.train.prepare import Data


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T > 0`` minimising the cross-entropy of ``softmax(logits / T)``; ``logits [N, K]``, ``labels [N]``."""
    log_t = torch.zeros(1, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits.double() / log_t.double().exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 100.0))


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """ECE of ``softmax(logits / temperature)`` over 15 confidence bins."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return float(multiclass_calibration_error(probs, labels, num_classes=logits.shape[1], n_bins=15))


def temperature_on_validation(model: TrainedModel, data: Data, config: Config, device: torch.device) -> dict[str, Any]:
    """The temperature of ``model`` (applied without one) fitted on the labelled validation windows, with their ECE
    before and after; ``temperature`` 1.0 where scaling does not lower it."""
    logits, labels = [], []
    for batch in make_loader(data, "val", config, shuffle=False, cuda=device.type == "cuda"):
        keep = batch["label"] >= 0
        logits.append(torch.from_numpy(model.predict_windows(batch["values"][keep], batch["observed"][keep])[1]))
        labels.append(batch["label"][keep])
    logits, labels = torch.cat(logits), torch.cat(labels)
    result: dict[str, Any] = {"temperature": 1.0, "val_windows": len(labels)}
    if len(labels):
        fitted = fit_temperature(logits, labels)
        before, after = expected_calibration_error(logits, labels), expected_calibration_error(logits, labels, fitted)
        result.update(val_ece=before, val_ece_scaled=after, temperature=fitted if after < before else 1.0)
    return result
