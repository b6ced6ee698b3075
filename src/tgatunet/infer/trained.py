"""A trained model read from its run directory alone, without the training stack.

A checkpoint is a plain dictionary: the network's weights under ``state_dict`` (prefixed
``model.``) and what built it under ``hyper_parameters`` (the run's config as flat keys,
channels, classes, need patterns). It is read with ``torch.load(weights_only=True)``, so
applying a run imports neither Lightning nor anything a checkpoint could smuggle in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from tgatunet.config import Config, config_from_dict
from tgatunet.data.normalize import ChannelStats
from tgatunet.errors import RunError
from tgatunet.graph.cache import GraphCache, open_graph_cache
from tgatunet.graph.knn import KnnGraph
from tgatunet.hardware import training_device
from tgatunet.infer.intervals import IntervalCalibration
from tgatunet.infer.rundir import RunDir
from tgatunet.infer.stream import WindowModel
from tgatunet.model.compile import CompiledOrEager
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """The network of a run with what applying it needs: its channels, classes, normalisation and windows.

    :meth:`windowed` is what :class:`~tgatunet.infer.stream.Stream` reads.
    """

    network: TGATUNet
    config: Config  # the run's config as the checkpoint holds it (batch size resolved)
    channels: list[str]
    classes: list[str]
    patterns: torch.Tensor  # [P, C] bool: the channel sets some source needs
    stats: ChannelStats
    device: torch.device
    knn: KnnGraph | None = None
    graph_cache: GraphCache | None = None
    compiled: CompiledOrEager | None = None
    temperature: float = 1.0  # divides the logits: probabilities calibrated on the validation windows
    intervals: IntervalCalibration | None = None  # completion intervals calibrated on the validation recordings
    report: tuple[dict, ...] = ()  # the verdict on each completed channel, from the validation recordings

    def windowed(self, stats: ChannelStats | None = None) -> WindowModel:
        """This model as a stream applies it; ``stats``: another normalisation (identity for normalised data)."""
        d = self.config.data
        return WindowModel(self, self.channels, self.classes, stats or self.stats, d.window_size, d.downsample, d.apply_stride,
                           self.intervals, self.report)

    def neighbors(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The windows' full-resolution knn graph (None: the temporal graph), from the graph cache when there is one."""
        if self.knn is None:
            return None
        if self.graph_cache is not None:
            return self.graph_cache.get(values, visible)
        return self.knn.build(values, visible)

    def forward(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``recon [B, T, C]``, ``logits [B, K]``, ``log_spread [B, T, C]`` of normalised ``values, visible [B, T, C]``
        on the model's device."""
        return (self.compiled or self.network)(values, visible, self.neighbors(values, visible))

    def predict_windows(self, values: torch.Tensor, visible: torch.Tensor,
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``recon [W, T, C]``, ``logits [W, K]`` (divided by the run's temperature) and ``spread [W, T, C]`` (the
        reconstructions' expected absolute errors), float32 numpy, of ``values, visible [W, T, C]``."""
        recon, logits, spread = predict_in_batches(self.forward, values, visible, batch_size, self.device, len(self.classes))
        return recon, logits / np.float32(self.temperature), spread


@torch.inference_mode()
def predict_in_batches(forward, values: torch.Tensor, visible: torch.Tensor, batch_size: int, device: torch.device,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``forward`` over ``values, visible [W, T, C]`` in batches on ``device``: ``recon [W, T, C]``, ``logits [W, K]``
    and ``spread = exp(log_spread) [W, T, C]`` as float32 numpy arrays (the network's output in whatever precision it
    ran)."""
    outputs: list[list[torch.Tensor]] = [[], [], []]
    for lo in range(0, len(values), batch_size):
        r, lg, log_spread = forward(values[lo : lo + batch_size].to(device, torch.float32), visible[lo : lo + batch_size].to(device))
        for out, x in zip(outputs, (r, lg, log_spread.float().exp())):
            out.append(x.float().cpu())
    if not outputs[0]:
        empty = np.zeros((0, *values.shape[1:]), np.float32)
        return empty, np.zeros((0, num_classes), np.float32), empty
    recon, logits, spread = (torch.cat(out).numpy() for out in outputs)
    return recon, logits, spread


def load_trained(run: RunDir, device: torch.device | None = None, compile: bool | None = None) -> TrainedModel:
    """The trained model of ``run``, read from the run directory only (config, ``data.json``, checkpoint).

    ``device``: where the model runs (default: where the run's config would train). ``compile``: run the network through
    ``torch.compile`` (:class:`~tgatunet.model.compile.CompiledOrEager`: eager where that is not supported); None: as
    the run's config says. Compiling takes seconds to a minute per input shape, once; it pays off where many windows
    follow.
    """

    run.require_trained()
    run_config = run.read_config()
    stats, _, _ = run.read_data()
    device = device or training_device(run_config.performance.accelerator).torch_device
    checkpoint = _read_checkpoint(run, device)
    hp = checkpoint["hyper_parameters"]
    # The network as trained; how densely to lay windows as the run's config.yaml says now.
    config = config_from_dict({**hp["config"], "apply_step": run_config.data.apply_step}, origin="checkpoint")
    channels, classes = list(hp["channels"]), list(hp["class_names"])
    network = TGATUNet(ModelSpec.from_config(config, len(channels), len(classes)))
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    loaded = network.load_state_dict(weights, strict=False)  # a run of an earlier version has no spread head
    if loaded.unexpected_keys or any(not k.startswith("spread.") for k in loaded.missing_keys):
        network.load_state_dict(weights)  # torch's message names the keys
    network.to(device).eval()
    wanted = run_config.performance.compile if compile is None else compile
    patterns = torch.tensor(hp["need_patterns"], dtype=torch.bool).reshape(-1, len(channels))
    temperature, intervals, report = run.read_calibration()
    return TrainedModel(network, config, channels, classes, patterns, stats, device,
                        knn=KnnGraph.from_config(config) if config.model.graph_type == "knn" else None,
                        graph_cache=open_graph_cache(run_config, run.root),
                        compiled=CompiledOrEager.for_inference(network, device) if wanted else None,
                        temperature=temperature, intervals=intervals, report=tuple(report))



def _read_checkpoint(run: RunDir, device: torch.device) -> dict:
    """The best checkpoint; ``last.ckpt``, with a warning, when the best one cannot be read."""
    failures = []
    for path in run.inference_checkpoints():
        try:
            checkpoint = torch.load(path, map_location=device, weights_only=True)
            if not {"hyper_parameters", "state_dict"} <= set(checkpoint):
                raise ValueError("not a tgatunet checkpoint")
        except Exception as err:  # truncated, empty, not a checkpoint: every reader has its own error type
            first_line = (str(err).splitlines() or ["unreadable"])[0]
            failures.append(f"'{path}' ({type(err).__name__}: {first_line})")
            continue
        if failures:
            log.warning("checkpoint %s cannot be read; using '%s' instead.", failures[0], path)
        return checkpoint
    raise RunError(f"no checkpoint of run '{run.root}' can be read: {'; '.join(failures)}. Train the run again.")
