"""Loading a trained run and running the model over many windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData, prepare_data
from tgatunet.errors import RunError
from tgatunet.graph.cache import open_graph_cache
from tgatunet.model.compile import CompiledOrEager
from tgatunet.rundir import RunDir
from tgatunet.train.module import TGATUNetModule


def pick_device() -> torch.device:
    """CUDA when it is there, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainedRun:
    """A run's config, its data (with the run's splits and normalisation) and its model."""

    run: RunDir
    config: Config
    data: PreparedData
    module: TGATUNetModule


def load_run(run: RunDir, device: torch.device | None = None, compile: bool | None = None) -> TrainedRun:
    """Load a trained run; the data is prepared with the run's own splits and normalisation.

    Args:
        compile: run the model through ``torch.compile``
            (:class:`~tgatunet.model.compile.CompiledOrEager`: eager where that is not supported);
            None: as the run's config says (``compile``). Compiling takes seconds to a minute per
            input shape, once; it pays off where many windows follow (serving, streaming).
    """
    run.require_trained()
    config = run.read_config()
    stats, splits, info = run.read_data()
    data = prepare_data(config, stats=stats, block_splits=splits)
    for key, now in [("channels", data.channels), ("class_names", data.class_names)]:
        if info[key] != now:
            raise RunError(
                f"the sources changed since run '{run.root}' was trained: {key} were {info[key]}, now {now}. "
                "Retrain on the current data."
            )
    module = TGATUNetModule.load_from_checkpoint(
        run.checkpoint_for_inference(),
        map_location=device or pick_device(),
        graph_cache=open_graph_cache(config, run.root),
    )
    module.eval()
    wanted = config.compile if compile is None else compile
    module.compiled = CompiledOrEager.for_inference(module.model, module.device) if wanted else None
    return TrainedRun(run, config, data, module)


@torch.inference_mode()
def run_model(
    module: TGATUNetModule, values: torch.Tensor, visible: torch.Tensor, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs for ``values, visible [W, T, C]``: ``recon [W, T, C]`` and ``logits [W, K]`` as numpy."""
    recon, logits = [], []
    for lo in range(0, len(values), batch_size):
        v = values[lo : lo + batch_size].to(module.device)
        m = visible[lo : lo + batch_size].to(module.device)
        r, lg = module(v, m)
        recon.append(r.float().cpu())
        logits.append(lg.float().cpu())
    if not recon:
        return np.zeros((0, *values.shape[1:]), np.float32), np.zeros((0, module.model.spec.num_classes), np.float32)
    return torch.cat(recon).numpy(), torch.cat(logits).numpy()
