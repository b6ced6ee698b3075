"""Why a training ended, and whether it ended too early: the budget ran out while validation still improved."""

from __future__ import annotations

from typing import Any


def training_ending(early_stopped: bool, checks_since_best: int, patience: int, epochs_auto: bool, windows_seen: int) -> dict[str, Any]:
    """``stopped_by`` (``early_stopping``, ``max_windows`` or ``epochs``) and, when the budget ended a run whose
    validation completion MAE was still improving, ``too_early`` with the key to raise.

    Still improving: the best validation check is fewer than ``patience // 2`` checks old, so early
    stopping was far from ending the run (it waits ``patience`` checks).
    """
    if early_stopped:
        return {"stopped_by": "early_stopping", "checks_since_best": checks_since_best}
    key = "max_windows" if epochs_auto else "epochs"
    ending: dict[str, Any] = {"stopped_by": key, "checks_since_best": checks_since_best}
    if checks_since_best < max(1, patience // 2):
        raise_to = f"max_windows: {2 * windows_seen}" if epochs_auto else "a larger epochs (or epochs: auto)"
        best = "at the last check" if checks_since_best == 0 else f"{checks_since_best} checks before the end"
        ending["too_early"] = (f"training ended at its {key} budget while the validation completion MAE was still improving (best {best}, "
                               f"early stopping waits {patience}): it would likely complete better with more training. Raise {key} "
                               f"(e.g. {raise_to}) and train again.")

    return ending
