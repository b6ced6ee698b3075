"""Completing and classifying rows fed in order, with memory bounded by a chunk, not by the file.

Rows arrive in chunks; contiguous rows with the same block id form a segment.
Inside a segment the model runs over windows that cover every row, exactly as
:func:`tgatunet.data.windows.covering_starts` lays them out: windows of
``window_size`` steps every ``stride`` rows, one more flush with the segment's
end, and a segment shorter than a window padded (padding hidden from the
model). With ``downsample > 1`` each phase of rows (``lo, lo + d, ...``;
``lo + 1, lo + 1 + d, ...``) is covered as its own sequence. A window is
computed as soon as its rows have arrived; a row is finished once no window
still to come covers it, and is then handed back with the mean of the
reconstructions and class probabilities of the windows that covered it.

Only cells that were not observed and belong to a fillable channel are filled;
every observed value is returned as it came.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from tgatunet.data.normalize import ChannelStats
from tgatunet.train.module import TGATUNetModule


@dataclass(frozen=True)
class WindowModel:
    """What applying a trained model needs, all of it read from the run directory."""

    module: TGATUNetModule
    channels: list[str]
    classes: list[str]
    stats: ChannelStats
    window_size: int
    downsample: int
    stride: int


@dataclass
class Finished:
    """Rows handed back: their input cells, completed values, what was filled, class probabilities."""

    frame: pd.DataFrame  # the rows as they came in
    completed: np.ndarray  # [n, C] float64 raw units: observed values, fills where filled, NaN elsewhere
    filled: np.ndarray  # [n, C] bool
    probabilities: np.ndarray  # [n, K] mean over the windows covering each row


@dataclass
class _Segment:
    """The rows of the current segment not yet handed back, and what the windows so far made of them."""

    block: str
    lo: int  # file row of the segment's first row
    base: int  # file row of the first buffered row
    values: np.ndarray  # [m, C] raw, NaN = not observed
    frames: list[pd.DataFrame]
    recon: np.ndarray  # [m, C] sums
    probs: np.ndarray  # [m, K] sums
    count: np.ndarray  # [m]
    next_start: list[int] = field(default_factory=list)  # per phase: next window start, in phase steps

    @property
    def end(self) -> int:
        return self.base + len(self.values)


class Stream:
    """Feed chunks of rows in file order; get finished rows back, and every window's class probabilities.

    Args:
        model: the trained model and its data settings.
        fillable: ``[C]`` bool, the channels whose missing cells are filled.
        batch_size: windows per forward pass.

    Attributes:
        windows: one record per window computed (block, first and last row, probabilities), drained by the caller.
        blocks: block id -> (sum of window probabilities ``[K]``, windows).
    """

    def __init__(self, model: WindowModel, fillable: np.ndarray, batch_size: int = 256) -> None:
        self.model, self.fillable, self.batch_size = model, fillable, batch_size
        self.step = max(1, model.stride // model.downsample)
        self.segment: _Segment | None = None
        self.windows: list[dict] = []
        self.blocks: dict[str, tuple[np.ndarray, int]] = {}

    def feed(self, frame: pd.DataFrame, values: np.ndarray, blocks: np.ndarray, first_row: int) -> list[Finished]:
        """Rows ``first_row ...`` of the file: ``frame`` as read, ``values [n, C]`` raw, ``blocks [n]`` ids."""
        out: list[Finished] = []
        change = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
        for lo, hi in zip([0, *change], [*change, len(blocks)]):
            block = blocks[lo]
            if self.segment is None or self.segment.block != block:
                out += self.finish()
                self.segment = self._new_segment(block, first_row + lo)
            self._append(frame.iloc[lo:hi], values[lo:hi])
            self._run_windows(ended=False)
            out += self._hand_back(ended=False)
        return out

    def finish(self) -> list[Finished]:
        """The end of the input (or of a segment): every buffered row, finished."""
        if self.segment is None:
            return []
        self._run_windows(ended=True)
        out = self._hand_back(ended=True)
        self.segment = None
        return out

    def _new_segment(self, block: str, lo: int) -> _Segment:
        C, K = len(self.model.channels), len(self.model.classes)
        return _Segment(block, lo, lo, np.zeros((0, C)), [], np.zeros((0, C)), np.zeros((0, K)), np.zeros(0, np.int64),
                        [0] * self.model.downsample)

    def _append(self, frame: pd.DataFrame, values: np.ndarray) -> None:
        s = self.segment
        s.values = np.concatenate([s.values, values])
        s.frames.append(frame)
        s.recon = np.concatenate([s.recon, np.zeros_like(values)])
        s.probs = np.concatenate([s.probs, np.zeros((len(values), s.probs.shape[1]))])
        s.count = np.concatenate([s.count, np.zeros(len(values), np.int64)])

    def _due_windows(self, ended: bool) -> list[tuple[int, int]]:
        """``(phase, start)`` of the windows whose rows have all arrived (all the rest when ``ended``)."""
        s, T, d = self.segment, self.model.window_size, self.model.downsample
        due = []
        for phase in range(d):
            steps = max(0, -(-(s.end - s.lo - phase) // d))  # rows of this phase so far
            while s.next_start[phase] + T <= steps:
                due.append((phase, s.next_start[phase]))
                s.next_start[phase] += self.step
            last = s.next_start[phase] - self.step  # the last window computed, if any
            if ended and steps and (last < 0 or last + T < steps):
                due.append((phase, max(0, steps - T)))  # flush with the end, or padded if shorter
                s.next_start[phase] = steps
        return due

    def _run_windows(self, ended: bool) -> None:
        due = self._due_windows(ended)
        if not due:
            return
        s, T, d = self.segment, self.model.window_size, self.model.downsample
        phase, start = (np.array(x) for x in zip(*due))
        rows = s.lo + phase[:, None] + (start[:, None] + np.arange(T)) * d  # [W, T] file rows
        inside = rows < s.end
        local = np.minimum(rows, s.end - 1) - s.base  # [W, T] buffer rows
        raw = s.values[local]  # [W, T, C]
        normalised = self.model.stats.apply(raw.reshape(-1, raw.shape[-1])).reshape(raw.shape)
        visible = ~np.isnan(normalised) & inside[..., None]
        values = torch.from_numpy(np.nan_to_num(normalised, nan=0.0))
        recon, logits = self.model.module.predict_windows(values, torch.from_numpy(visible), self.batch_size)
        probs = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()  # [W, K]
        np.add.at(s.recon, local[inside], self.model.stats.invert(recon)[inside])
        np.add.at(s.probs, local[inside], np.repeat(probs[:, None], T, axis=1)[inside])
        np.add.at(s.count, local[inside], 1)
        total, n = self.blocks.get(s.block, (0.0, 0))
        self.blocks[s.block] = (total + probs.sum(axis=0), n + len(probs))
        last = np.where(inside, rows, -1).max(axis=1)
        self.windows += [{"block": s.block, "first_row": int(r[0]), "last_row": int(e), "probs": p}
                         for r, e, p in zip(rows, last, probs)]

    def _hand_back(self, ended: bool) -> list[Finished]:
        s, d = self.segment, self.model.downsample
        if ended:
            upto = s.end
        else:  # a row is finished once every window still to come starts after it, in its phase
            upto = min(s.lo + phase + s.next_start[phase] * d for phase in range(d))
        n = max(0, min(upto, s.end) - s.base)
        if n == 0:
            return []
        frame = pd.concat(s.frames) if len(s.frames) > 1 else s.frames[0]
        raw, count = s.values[:n], np.maximum(s.count[:n], 1)[:, None]
        filled = np.isnan(raw) & self.fillable[None, :] & (s.count[:n, None] > 0)
        completed = np.where(filled, s.recon[:n] / count, raw)
        finished = Finished(frame.iloc[:n], completed, filled, s.probs[:n] / count)
        s.frames = [frame.iloc[n:]]
        s.values, s.recon, s.probs, s.count = s.values[n:], s.recon[n:], s.probs[n:], s.count[n:]
        s.base += n
        return [finished]
