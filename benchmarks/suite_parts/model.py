"""Benchmark of the model options: ``tgatunet bench model --out DIR [--quick]``.

For the performance guide's ``medium`` and ``high`` presets (batch size, width,
depth and heads of :data:`tgatunet.config.PRESETS`), window_size 128 and the
bundled data's 6 channels and 4 classes, one **training step** is: forward,
masked L1 reconstruction loss on hidden values plus cross-entropy (the
training objective), backward, AdamW step, on a fixed synthetic batch. Step
variants, each with its own model built from the same seed:

* ``standard`` (fp32) and ``lite`` (``use_optimized_model``),
* ``standard_checkpoint`` and ``lite_checkpoint`` (``use_gradient_checkpoint``),
* ``standard_bf16`` (``precision: bf16-mixed``, i.e. ``torch.autocast`` to
  bfloat16, as Lightning does), and on CUDA ``standard_fp16`` (``16-mixed``:
  autocast to float16 with a gradient scaler).

How **time** is measured: every round runs each variant's step once
(:func:`tgatunet.profiling.median_seconds` with one repeat, device
synchronised), the order of the variants rotating from round to round, after
two warm-up steps each. A ratio (e.g. standard / lite) is taken within each
round, so load from other processes hits both sides alike, and the figure is
the median over rounds.

How **peak memory** is measured: :func:`tgatunet.profiling.peak_memory_bytes`
of one training step after the warm-up: every tensor allocated during the step
counts (activations kept for backward, gradients, temporaries; on CUDA the
caching allocator's peak minus what was allocated before), parameters and
optimizer state that exist before the step do not.

**Completion MAE**: the standard and the lite model are each trained on the
bundled BasicMotions config for the same number of epochs (early stopping
off), then evaluated (:func:`tgatunet.evaluate.evaluate_run`) on its test
split; ``lite_mae_ratio`` = lite MAE / standard MAE.

Figures in ``DIR/results.json`` under ``model`` (for ``P`` in medium, high):
``P.lite_param_reduction``, ``P.lite_step_speedup``, ``P.lite_peak_memory_reduction``,
``P.checkpoint_memory_reduction``, ``P.checkpoint_step_time_ratio`` (standard model;
``P.lite_checkpoint_*`` for the lite one), ``P.bf16_step_speedup``,
``P.bf16_memory_reduction`` (and ``P.fp16_*`` on CUDA), ``lite_mae_ratio``.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from tgatunet.bench.results import write_section
from tgatunet.config import PRESETS, Config, load_config
from tgatunet.evaluate import evaluate_run
from tgatunet.model.factory import build_model
from tgatunet.model.tgat_unet import ModelSpec
from tgatunet.predict import pick_device
from tgatunet.profiling import median_seconds, peak_memory_bytes
from tgatunet.train.objective import classification_loss, masked_loss, sample_hidden
from tgatunet.train.run import train

log = logging.getLogger(__name__)

PRESET_NAMES = ("medium", "high")
WINDOW_SIZE = 128
CHANNELS, CLASSES = 6, 4  # the bundled BasicMotions data
AUTOCAST_DTYPES = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

METHOD = {
    "training_step": "forward + masked L1 reconstruction + cross-entropy + backward + AdamW step, "
    f"synthetic batch of the preset's batch_size, window_size {WINDOW_SIZE}, {CHANNELS} channels, {CLASSES} classes",
    "time": "each round runs every variant's step once (order rotating, device synchronised) after 2 warm-up steps; "
    "ratios are taken within a round and the figure is the median over rounds",
    "peak_memory": "tgatunet.profiling.peak_memory_bytes of one training step: every tensor allocated during the "
    "step (activations kept for backward, gradients, temporaries); on CPU by tracking tensor storages through a "
    "dispatch mode, on CUDA from the caching allocator's peak; parameters and optimizer state that exist before "
    "the step are not counted",
    "mixed_precision": "torch.autocast to bfloat16 (bf16-mixed) or float16 with a GradScaler (16-mixed, CUDA only), "
    "as Lightning's precision plugin does",
    "lite_mae_ratio": "lite / standard completion MAE on the bundled config's test split, both trained for the "
    "same epochs with early stopping off",
}


def preset_spec(preset: str, **changes: Any) -> ModelSpec:
    """The model of a guide preset on the bundled data's channels and classes."""
    keys = ("hidden_channels", "encoder_layers", "decoder_layers", "transformer_layers", "attention_heads")
    return ModelSpec(in_channels=CHANNELS, num_classes=CLASSES, **{**{k: PRESETS[preset][k] for k in keys}, **changes})


def synthetic_batch(batch_size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch: ``values, observed, hidden [B, T, C]``, ``label [B]``; 10% of values unobserved."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, WINDOW_SIZE, CHANNELS)
    observed = torch.rand(shape, generator=g) > 0.1
    hidden = sample_hidden(observed, torch.zeros(0, CHANNELS, dtype=torch.bool), 0.0, 0.15, 0.1, g)
    batch = {
        "values": torch.randn(shape, generator=g),
        "observed": observed,
        "hidden": hidden,
        "label": torch.randint(0, CLASSES, (batch_size,), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def training_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str = "32") -> Callable[[], None]:
    """One optimisation step of ``model`` on ``batch`` under ``precision`` (a config ``precision`` value)."""
    device = batch["values"].device
    dtype = AUTOCAST_DTYPES[precision]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    visible = batch["observed"] & ~batch["hidden"]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            recon, logits = model(batch["values"], visible)
        loss = masked_loss(recon.float(), batch["values"], batch["hidden"], "l1") + classification_loss(
            logits.float(), batch["label"]
        )
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def step_variants(preset: str, device: torch.device) -> dict[str, tuple[torch.nn.Module, str]]:
    """Each variant's model (built from the same seed) and precision."""
    variants = {
        "standard": ({}, "32"),
        "lite": ({"lite": True}, "32"),
        "standard_checkpoint": ({"gradient_checkpoint": True}, "32"),
        "lite_checkpoint": ({"lite": True, "gradient_checkpoint": True}, "32"),
        "standard_bf16": ({}, "bf16-mixed"),
    }
    if device.type == "cuda":
        variants["standard_fp16"] = ({}, "16-mixed")
    built = {}
    for name, (changes, precision) in variants.items():
        torch.manual_seed(0)
        built[name] = (build_model(preset_spec(preset, **changes)).to(device).train(), precision)
    return built


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> list[dict[str, float]]:
    """``rounds`` dicts of one step time per variant; the order rotates every round."""
    names = list(steps)
    out = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        out.append({name: median_seconds(steps[name], repeats=1, warmup=0, device=device) for name in order})
    return out


def _median_ratio(times: list[dict[str, float]], numerator: str, denominator: str) -> float:
    return statistics.median(t[numerator] / t[denominator] for t in times)


def preset_figures(preset: str, device: torch.device, rounds: int) -> dict[str, Any]:
    """All step figures of one preset (see the module docstring)."""
    batch = synthetic_batch(PRESETS[preset]["batch_size"], device)
    models = step_variants(preset, device)
    steps = {name: training_step(model, batch, precision) for name, (model, precision) in models.items()}
    for step in steps.values():
        for _ in range(2):  # optimizer state and allocator caches exist after this
            step()
    peak = {name: peak_memory_bytes(step, device) for name, step in steps.items()}
    times = interleaved_times(steps, rounds, device)
    params = {name: sum(p.numel() for p in models[name][0].parameters()) for name in ("standard", "lite")}

    def reduction(name: str, base: str) -> float:
        return 1.0 - peak[name] / peak[base]

    figures = {
        "lite_param_reduction": 1.0 - params["lite"] / params["standard"],
        "lite_step_speedup": _median_ratio(times, "standard", "lite"),
        "lite_peak_memory_reduction": reduction("lite", "standard"),
        "checkpoint_memory_reduction": reduction("standard_checkpoint", "standard"),
        "checkpoint_step_time_ratio": _median_ratio(times, "standard_checkpoint", "standard"),
        "lite_checkpoint_memory_reduction": reduction("lite_checkpoint", "lite"),
        "lite_checkpoint_step_time_ratio": _median_ratio(times, "lite_checkpoint", "lite"),
        "bf16_step_speedup": _median_ratio(times, "standard", "standard_bf16"),
        "bf16_memory_reduction": reduction("standard_bf16", "standard"),
    }
    if "standard_fp16" in steps:
        figures["fp16_step_speedup"] = _median_ratio(times, "standard", "standard_fp16")
        figures["fp16_memory_reduction"] = reduction("standard_fp16", "standard")
    return {
        **figures,
        "parameters": params,
        "step_ms_median": {name: 1e3 * statistics.median(t[name] for t in times) for name in steps},
        "peak_memory_mib": {name: value / 2**20 for name, value in peak.items()},
        "rounds": rounds,
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


def run_model_benchmark(out: Path, config_path: Path, rounds: int = 15, epochs: int = 20) -> dict[str, Any]:
    """Measure every figure, write the ``model`` section of ``out/results.json``, return it.

    Args:
        rounds: timing rounds per preset.
        epochs: training epochs of each model behind ``lite_mae_ratio``.
    """
    out = Path(out)
    config = load_config(config_path)  # a bad config fails now, not after the timings
    device = pick_device()
    results: dict[str, Any] = {"device": str(device), "method": METHOD}
    for preset in PRESET_NAMES:
        log.info("model benchmark: preset %s on %s", preset, device)
        results[preset] = preset_figures(preset, device, rounds)
    results.update(completion_mae(config, out / "model_mae", epochs), config=str(config_path))
    write_section(out, "model", results)
    return results
