"""The model options: ``python performance_test.py model [--quick]``.

For the performance guide's ``medium`` and ``high`` presets (batch size, width, depth and heads
of :data:`tgatunet.config.PRESETS`), window_size 128, on the reference setting's synthetic data
(:mod:`benchmarks.setting`: 9 channels, 3 sources), each variant is a config of its own
(``config.with_keys``) whose real training step runs under Lightning (:mod:`benchmarks.training`):

* ``standard`` and ``lite`` (``use_optimized_model``), checkpointing off, fp32;
* ``standard_checkpoint`` and ``lite_checkpoint`` (``use_gradient_checkpoint: true``), and
  ``standard_selective`` (``checkpoint_mode: selective``: matrix products kept, the rest recomputed);
* ``standard_bf16`` (``precision: bf16-mixed``), and on CUDA ``standard_fp16`` (``16-mixed``).

How **time** is measured: every round fits each variant's module (built once, from the same
seed) for one warm-up step and ``steps`` timed steps; the variant's time in that round is the
median step (:class:`~tgatunet.train.callbacks.StepTimer`). The order of the variants rotates
from round to round. A ratio (e.g. standard / lite) is taken within each round, so load from
other processes hits both sides alike, and the figure is the median over rounds.

How **peak memory** is measured: :func:`benchmarks.training.peak_training_bytes`, a one-step fit
of the module built before it: gradients, the optimiser's state, the batch, activations and
temporaries count; the parameters, which exist before, do not.

**Completion MAE**: the standard and the lite model are each trained on the bundled BasicMotions
config for the same number of epochs (early stopping off), then evaluated
(:func:`tgatunet.evaluate.evaluate.evaluate_run`) on its test split; ``lite_mae_ratio`` = lite MAE /
standard MAE.

Figures in ``DIR/results.json`` under ``model`` (for ``P`` in medium, high):
``P.lite_param_reduction``, ``P.lite_step_speedup``, ``P.lite_peak_memory_reduction``,
``P.checkpoint_memory_reduction``, ``P.checkpoint_step_time_ratio`` (standard model;
``P.lite_checkpoint_*`` for the lite one, ``P.selective_checkpoint_*`` for selective recomputation),
``P.bf16_step_speedup``, ``P.bf16_memory_reduction``
(and ``P.fp16_*`` on CUDA), ``lite_mae_ratio``.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.config import PRESETS, Config, load_config
from tgatunet.hardware import training_device
from tgatunet.train.run import Data, load_data, train

from benchmarks.results import write_section
from benchmarks.setting import CHANNELS, DEFAULT_CONFIG, write_setting_data
from benchmarks.training import device_of, new_module, peak_training_bytes, step_seconds

log = logging.getLogger(__name__)

PRESET_NAMES = ("medium", "high")
WINDOW_SIZE = 128

# Each variant's config keys over the preset's.
VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {},
    "lite": {"use_optimized_model": True},
    "standard_checkpoint": {"use_gradient_checkpoint": True},
    "lite_checkpoint": {"use_optimized_model": True, "use_gradient_checkpoint": True},
    "standard_selective": {"use_gradient_checkpoint": True, "checkpoint_mode": "selective"},
    "standard_bf16": {"precision": "bf16-mixed"},
}
CUDA_VARIANTS: dict[str, dict[str, Any]] = {"standard_fp16": {"precision": "16-mixed"}}
BASE = {"use_optimized_model": False, "use_gradient_checkpoint": False, "precision": "32"}

METHOD = {
    "training_step": "the real TGATUNetModule training step run by Lightning (quiet_trainer.fit) on the training "
    f"DataLoader of synthetic data ({CHANNELS} channels, window_size {WINDOW_SIZE}), batch of the preset's "
    "batch_size; each variant a config (config.with_keys)",
    "time": "each round fits every variant (order rotating) for 1 warm-up + the timed steps; its time is "
    "StepTimer's median step; ratios are taken within a round and the figure is the median over rounds",
    "peak_memory": "tgatunet.profiling.peak_memory_bytes of a one-step fit of a module built before: gradients, "
    "AdamW state, batch, activations and temporaries (on CPU by tracking tensor storages through a dispatch mode, "
    "on CUDA from the caching allocator's peak); the parameters are not counted",
    "mixed_precision": "config precision bf16-mixed or 16-mixed (CUDA only): Lightning's precision plugin",
    "lite_mae_ratio": "lite / standard completion MAE on the bundled config's test split, both trained for the "
    "same epochs with early stopping off",
}


def variant_configs(base: Config, preset: str, cuda: bool) -> dict[str, Config]:
    """Each variant's config: the preset's sizes on ``base``'s data, then the variant's keys."""
    keys = {k: v for k, v in PRESETS[preset].items() if k != "use_gradient_checkpoint"}
    variants = {**VARIANTS, **(CUDA_VARIANTS if cuda else {})}
    return {name: base.with_keys(**{**keys, **BASE, **changes}) for name, changes in variants.items()}


def interleaved_step_times(configs: dict[str, Config], data: Data, modules: dict, rounds: int, steps: int):
    """``rounds`` dicts of one median step time per variant; the order rotates every round."""
    names = list(configs)
    out = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        out.append({name: step_seconds(configs[name], data, steps, modules[name]) for name in order})
    return out


def _median_ratio(times: list[dict[str, float]], numerator: str, denominator: str) -> float:
    return statistics.median(t[numerator] / t[denominator] for t in times)


def preset_figures(base: Config, data: Data, preset: str, rounds: int, steps: int) -> dict[str, Any]:
    """All step figures of one preset (see the module docstring)."""
    configs = variant_configs(base, preset, device_of(base).type == "cuda")
    modules = {name: new_module(config, data) for name, config in configs.items()}
    peak = {name: peak_training_bytes(configs[name], data, 1, modules[name]) for name in configs}
    times = interleaved_step_times(configs, data, modules, rounds, steps)
    params = {name: sum(p.numel() for p in modules[name].model.parameters()) for name in ("standard", "lite")}

    def reduction(name: str, base_name: str) -> float:
        return 1.0 - peak[name] / peak[base_name]

    figures = {
        "lite_param_reduction": 1.0 - params["lite"] / params["standard"],
        "lite_step_speedup": _median_ratio(times, "standard", "lite"),
        "lite_peak_memory_reduction": reduction("lite", "standard"),
        "checkpoint_memory_reduction": reduction("standard_checkpoint", "standard"),
        "checkpoint_step_time_ratio": _median_ratio(times, "standard_checkpoint", "standard"),
        "selective_checkpoint_memory_reduction": reduction("standard_selective", "standard"),
        "selective_checkpoint_step_time_ratio": _median_ratio(times, "standard_selective", "standard"),
        "lite_checkpoint_memory_reduction": reduction("lite_checkpoint", "lite"),
        "lite_checkpoint_step_time_ratio": _median_ratio(times, "lite_checkpoint", "lite"),
        "bf16_step_speedup": _median_ratio(times, "standard", "standard_bf16"),
        "bf16_memory_reduction": reduction("standard_bf16", "standard"),
    }
    if "standard_fp16" in configs:
        figures["fp16_step_speedup"] = _median_ratio(times, "standard", "standard_fp16")
        figures["fp16_memory_reduction"] = reduction("standard_fp16", "standard")
    return {
        **figures,
        "parameters": params,
        "step_ms_median": {name: 1e3 * statistics.median(t[name] for t in times) for name in configs},
        "peak_memory_mib": {name: value / 2**20 for name, value in peak.items()},
        "rounds": rounds,
        "timed_steps_per_round": steps,
        "preset": {**PRESETS[preset], "window_size": WINDOW_SIZE, "channels": CHANNELS},
    }


def completion_mae(config: Config, work_dir: Path, epochs: int) -> dict[str, Any]:
    """Train the standard and the lite model of ``config`` for ``epochs`` each; their test MAE."""
    base = config.to_dict()  # source paths resolved, so the copies work from work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    mae = {}
    for name, optimized in (("standard", False), ("lite", True)):
        cfg = {**base, "use_optimized_model": optimized, "epochs": epochs, "patience": epochs}
        path = work_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        log.info("training the %s model for %d epochs", name, epochs)
        run = train(path, overwrite=True, run_dir=work_dir / name, progress_bar=False)
        mae[name] = evaluate_run(run.root)["completion"]["model"]["mae"]
    return {"lite_mae_ratio": mae["lite"] / mae["standard"], "mae": mae, "epochs": epochs}


def setting_data(folder: Path, window_size: int = WINDOW_SIZE, blocks: int = 12) -> tuple[Config, Data]:
    """Synthetic data at the reference setting with windows of ``window_size``, for the step variants."""
    device = training_device("auto").torch_device
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    path = write_setting_data(
        folder, blocks, 4 * window_size, window_size=window_size, step_size=window_size // 2, accelerator=accelerator
    )
    config = load_config(path)
    return config, load_data(config)


def run_model_benchmark(
    out: Path, config_path: Path = DEFAULT_CONFIG, rounds: int = 15, epochs: int = 20, steps: int = 3
) -> dict[str, Any]:
    """Measure every figure, write the ``model`` section of ``out/results.json``, return it.

    Args:
        rounds: timing rounds per preset.
        epochs: training epochs of each model behind ``lite_mae_ratio``.
        steps: timed training steps per variant and round.
    """
    out = Path(out)
    config = load_config(config_path)  # a bad config fails now, not after the timings
    results: dict[str, Any] = {"method": METHOD}
    with tempfile.TemporaryDirectory(prefix="tgatunet-model-bench-") as tmp:
        base, data = setting_data(Path(tmp), WINDOW_SIZE)
        results["device"] = str(device_of(base))
        for preset in PRESET_NAMES:
            log.info("model benchmark: preset %s on %s", preset, results["device"])
            results[preset] = preset_figures(base, data, preset, rounds, steps)
        results.update(completion_mae(config, Path(tmp) / "model_mae", epochs), config=str(config_path))
    write_section(out, "model", results)
    return results
