"""The config's keys, by concern: data, model, training, performance, evaluation.

Each section is a pydantic model of flat YAML keys (a config file names them without the section, so each YAML block
of the performance guide pastes in as it is); :class:`tgatunet.config.Config` holds one of each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# A positive whole number, or "auto": the value is then chosen by measuring.
PositiveOrAuto = Annotated[int, Field(ge=1)] | Literal["auto"]
# A random seed: NumPy, PyTorch and Lightning all take 0 .. 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# A file or folder: ``~`` is expanded as the shell would (a literal ``./~`` folder is never meant).
PathText = Annotated[str, AfterValidator(os.path.expanduser)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Strict):
    """One tabular source file and the modalities it has and lacks."""

    name: str = Field(description="Unique name of the source, used in reports and output files.")
    path: PathText | None = Field(default=None, description="CSV or Parquet file; relative paths are relative to the config file, "
                                  "'bundled:NAME/FILE' names a dataset shipped with tgatunet.")
    frame: Any = Field(default=None, exclude=True,
                       description="Python API: a pandas DataFrame instead of a file (saved into the run directory when training).")
    have: list[str] = Field(default_factory=list, description="Modality columns this source has, besides common_modalities.")
    need: list[str] = Field(default_factory=list,
                            description="Modality columns this source lacks and tgatunet completes (absent from the file, or present but empty).")
    block_col: str | None = Field(default=None, description="Overrides the global block_col.")
    label_col: str | None = Field(default=None, description="Overrides the global label_col.")
    time_col: str | None = Field(default=None, description="Overrides the global time_col.")
    rate_hz: float | None = Field(default=None, gt=0.0, description="Rows per second of this source; with a time column, the two must "
                                  "agree within 2% (checked in blocks of 20 steps or more).")
    max_gap_s: float | None = Field(default=None, gt=0.0, description="Overrides the global max_gap_s.")

    @model_validator(mode="after")
    def _have_and_need_disjoint(self) -> SourceConfig:
        if (self.path is None) == (self.frame is None):
            raise ValueError(f"source '{self.name}' needs exactly one of 'path' (a file) or 'frame' (a DataFrame)")
        if self.frame is not None and not isinstance(self.frame, pd.DataFrame):
            raise ValueError(f"source '{self.name}': 'frame' must be a pandas DataFrame, not {type(self.frame).__name__}")
        both = sorted(set(self.have) & set(self.need))
        if both:
            raise ValueError(f"source '{self.name}' lists {both} in both 'have' and 'need'")
        return self


class DataConfig(Strict):
    """What the data are and how they are cut into windows and split."""

    sources: list[SourceConfig] = Field(min_length=1, description="The data sources (see the example above).")
    common_modalities: list[str] = Field(default_factory=list, description="Modality columns that every source has.")
    block_col: str | None = Field(default=None, description="Column naming contiguous recordings (subject/session); none: each file is one block.")
    label_col: str = Field(description="Column holding the class of each row (int or string).")
    time_col: str | None = Field(default=None, description="Column holding each row's time (seconds as numbers, or datetimes with or without "
                                 "a time zone), in the sources whose file has it; a source with a time column or rate_hz is resampled onto "
                                 "sample_rate_hz.")
    max_gap_s: float | None = Field(default=None, gt=0.0, description="A time jump longer than this (seconds) inside a block starts a new "
                                    "segment; shorter ones stay in the segment as unobserved steps. null: never split.")
    sample_rate_hz: Annotated[float, Field(gt=0.0)] | Literal["auto"] = Field(
        default="auto", description="The model's grid, in steps per second, onto which timed sources are resampled (anti-aliased "
        "down, interpolated up); auto: the lowest rate of the timed sources. Sources without rate_hz or time column are taken as "
        "already on it.")
    window_seconds: float | None = Field(default=None, gt=0.0, description="window_size in seconds (needs sample_rate_hz as a number).")
    step_seconds: float | None = Field(default=None, gt=0.0, description="step_size in seconds (needs sample_rate_hz as a number).")
    split_col: str | None = Field(default=None, description="Optional column fixing each block's split (train/val/test); without 'val' values, "
                                  "validation blocks are drawn from the train blocks.")
    window_size: int = Field(default=50, ge=4, description="Time steps per window.")
    step_size: int | None = Field(default=None, ge=1, description="Stride between windows; default window_size // 2.")
    apply_step: int | None = Field(default=None, ge=1,
                                   description="Stride of the windows laid over a recording to complete it (complete, predict, and evaluate's "
                                   "completion scores); default window_size // 2: as accurate as denser windows at a fraction of the time.")
    downsample: int = Field(default=1, ge=1, description="Take every n-th row inside a window.")
    label_rule: Literal["last", "majority"] = Field(default="last", description="Window label: the label of its last row, or the most frequent one.")
    val_fraction: float = Field(default=0.15, ge=0.0, lt=1.0, description="Share of blocks for validation.")
    test_fraction: float = Field(default=0.15, ge=0.0, lt=1.0, description="Share of blocks for testing (when split_col gives no test blocks).")
    split_seed: Seed | None = Field(default=None, description="Seed of the block split; null: seed. evaluate --seeds keeps it while seed changes.")
    data_store: PathText | None = Field(default=None, description="Folder written by `tgatunet data prepare`: training reads windows from it lazily "
                                        "(relative to the config file); null reads the sources into memory.")

    @property
    def channels(self) -> list[str]:
        """The model's channel set: ordered union of common, then each source's have and need."""
        ordered: list[str] = []
        for name in [*self.common_modalities, *(c for s in self.sources for c in [*s.have, *s.need])]:
            if name not in ordered:
                ordered.append(name)
        return ordered

    @property
    def stride(self) -> int:
        return self.step_size or max(1, self.window_size // 2)

    @property
    def apply_stride(self) -> int:
        return self.apply_step or max(1, self.window_size // 2)

    @model_validator(mode="before")
    @classmethod
    def _steps_from_seconds(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for seconds, steps, least in (("window_seconds", "window_size", 4), ("step_seconds", "step_size", 1)):
            if data.get(seconds) is None:
                continue
            rate = data.get("sample_rate_hz", "auto")
            if not isinstance(rate, (int, float)) or isinstance(rate, bool):
                raise ValueError(f"{seconds} needs sample_rate_hz as a number (steps per second), not {rate!r}")
            if not isinstance(data[seconds], (int, float)) or data[seconds] <= 0:
                raise ValueError(f"{seconds} must be a positive number of seconds, not {data[seconds]!r}")
            count = max(least, round(data[seconds] * rate))
            if data.get(steps) is not None and data[steps] != count:
                raise ValueError(f"{seconds} {data[seconds]} at sample_rate_hz {rate} is {count} steps, but {steps} is "
                                 f"{data[steps]}; give one of them")
            data[steps] = count
        return data

    @model_validator(mode="after")
    def _windows_cover_every_row(self) -> DataConfig:
        if self.apply_step is not None and self.apply_step > self.window_size:
            raise ValueError(f"apply_step {self.apply_step} is larger than window_size {self.window_size}: rows between the "
                             "windows would be neither completed nor classified. Use at most window_size.")
        return self


class ModelConfig(Strict):
    """The network: the T-GAT-UNet's sizes and the graph over a window's time steps."""

    use_optimized_model: bool = Field(default=False, description="Use the lightweight T-GAT-UNet variant (same inputs and outputs).")
    hidden_channels: int = Field(default=64, ge=2, description="Width of every hidden layer.")
    encoder_layers: int = Field(default=2, ge=1, description="GAT levels in the encoder.")
    decoder_layers: int = Field(default=2, ge=1, description="GAT levels in the decoder.")
    transformer_layers: int = Field(default=1, ge=0, description="Transformer layers in the bottleneck.")
    attention_heads: int = Field(default=2, ge=1, description="Heads of every GAT and attention layer.")
    time_k: int = Field(default=1, ge=1, description="Temporal graph: each step is linked to the steps within time_k.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout in the model.")
    ff_multiplier: int = Field(default=2, ge=1, description="Transformer feed-forward width / hidden_channels.")
    graph_type: Literal["temporal", "knn"] = Field(default="temporal", description="Graph over a window's time steps: 'temporal' links the steps "
                                                   "within time_k; 'knn' also links each step to its graph_knn most similar steps, by the values the "
                                                   "model is allowed to see.")
    graph_knn: int = Field(default=4, ge=1, description="knn graph: similar steps linked to each step, besides its temporal neighbours.")


class TrainingConfig(Strict):
    """The objective, the optimiser and the training budget."""

    batch_size: PositiveOrAuto = Field(default=16, description="Windows per training step; auto: the batch measured fastest within memory_target on "
                                       "the training device, with the learning rate scaled by sqrt(batch / 16).")
    epochs: PositiveOrAuto = Field(default="auto", description="Training epochs at most; auto: train until the validation completion error stops "
                                   "falling (patience), at most max_windows windows seen, whatever the dataset's size.")
    max_windows: int = Field(default=320_000, ge=1, description="With epochs: auto, the most training windows a run sees (20,000 steps of 16).")
    lr: float = Field(default=2e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, ge=0.0, description="AdamW weight decay.")
    patience: int = Field(default=12, ge=1, description="Early stopping: validation checks without a lower validation completion MAE (a check every "
                          "epoch, or every few epochs when an epoch has fewer than 3,200 windows).")
    grad_clip: float | None = Field(default=1.0, gt=0.0, description="Gradient norm clipping; null disables it.")
    seed: Seed = Field(default=42, description="Seed of splits, masking, initialisation and shuffling.")
    mask_pattern_prob: float = Field(default=0.5, ge=0.0, le=1.0,
                                     description="Chance that a training window hides the channels another source needs.")
    mask_channel_prob: float = Field(default=0.15, ge=0.0, le=1.0, description="Chance that each other observed channel is hidden.")
    mask_step_prob: float = Field(default=0.1, ge=0.0, le=1.0, description="Chance that each observed value is hidden on its own.")
    mask_gap_prob: float = Field(default=0.3, ge=0.0, le=1.0,
                                 description="Chance that an observed channel of a window loses a contiguous run of steps.")
    mask_gap_max: float = Field(default=0.25, gt=0.0, le=1.0, description="Longest such run, as a share of window_size.")
    fresh_offsets: bool = Field(default=True, description="Draw each epoch's training windows at fresh start rows (as many as step_size gives) "
                                "instead of the same ones every epoch; step_size still lays out the windows that evaluation classifies.")
    recon_loss: Literal["mse", "l1", "huber"] = Field(default="l1",
                                                      description="Reconstruction loss on hidden observed values (l1: completion is scored by MAE).")
    recon_weight: float = Field(default=1.0, ge=0.0, description="Weight of the reconstruction loss.")
    cls_weight: float = Field(default=0.5, ge=0.0, description="Weight of the classification loss.")
    dynamic_need_update: bool = Field(default=False,
                                      description="Every need_update_every epochs from need_update_start, complete the need channels of the training "
                                      "windows and feed them as inputs (never as targets; validation/test are never written). Not with data_store.")
    need_update_every: int = Field(default=5, ge=1, description="Epochs between two dynamic need updates.")
    need_update_start: int = Field(default=10, ge=0, description="First epoch (counted from 0) of the dynamic need update.")
    run_dir: PathText | None = Field(default=None, description="Run directory (relative to the working directory); default runs/<config name>.")


class PerformanceConfig(Strict):
    """How training uses the machine: memory, precision, compilation, devices, the graph cache."""

    hardware_profile: Literal["auto", "low", "medium", "high"] | None = Field(
        default=None, description="Apply the guide's preset (low, medium, high) to the model and batch keys this file does not set; "
        "auto picks it by the training device's memory (or memory_budget_gb). null: no preset."
    )
    use_memory_optimizer: bool = Field(default=False, description="Run each training step in the largest micro-batches that keep memory under "
                                       "memory_target (gradients accumulated, so the step is the same), lower them when memory runs high, and retry "
                                       "a step that runs out of memory with half the micro-batch.")
    memory_target: float = Field(default=0.8, gt=0.0, le=1.0,
                                 description="Memory optimizer: keep peak training memory below this fraction of the memory budget.")
    memory_budget_gb: float | None = Field(default=None, gt=0.0, description="Memory optimizer: memory training may use, in GB (2**30 bytes); null: "
                                           "the GPU's free memory on CUDA, the available RAM on CPU.")
    use_gradient_checkpoint: bool = Field(default=False, description="Recompute block activations in the backward pass: less memory, more time.")
    checkpoint_mode: Literal["full", "selective"] = Field(default="full", description="Gradient checkpointing: recompute whole blocks (full), or "
                                                          "keep the matrix products' outputs and recompute only the element-wise work (selective; on "
                                                          "a CPU slower and larger, see docs/PERFORMANCE.md).")
    precision: Literal["32", "bf16-mixed", "16-mixed", "bf16-true"] = Field(default="32", description="Numeric precision, through Lightning "
                                                                            "(16-mixed runs as bf16-mixed on a CPU).")
    compile: bool = Field(default=False, description="Run the model through torch.compile, in training and when the trained run predicts (evaluate, "
                          "complete); where that is not supported, warn and run eagerly.")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(default="auto", description="Where to train; auto picks CUDA when it is there.")
    devices: int | Literal["auto"] = Field(default=1, description="Processes (GPUs, or CPU processes) per machine; more than 1 trains with DDP.")
    num_nodes: int = Field(default=1, ge=1, description="Machines taking part in one training (torchrun, SLURM).")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(default="auto", description="Lightning strategy: auto (DDP when devices x num_nodes > 1), ddp, "
                                                     "or fsdp (GPUs only).")
    num_workers: int | None = Field(default=None, ge=0, description="DataLoader worker processes; null: 2 when training on CUDA (batches prepared "
                                    "while the GPU computes), 0 on CPU (workers would take the cores the model needs).")
    use_graph_cache: bool = Field(default=True, description="knn graph: evaluation and completion read the graphs of windows seen before from a disk "
                                  "cache (built by them or by `tgatunet cache build`) instead of rebuilding them. Training builds its own.")
    graph_cache_dir: PathText | None = Field(default=None, description="Disk cache of knn graphs (relative to the working directory); default "
                                             "<run_dir>/graph_cache. Entries are keyed by content, so runs may share one.")
    graph_cache_max_mb: float = Field(default=1024.0, gt=0.0, description="Disk cache size limit; least recently used entries are evicted beyond it.")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as a number; Lightning users write it that way.
        return {32: "32", 16: "16-mixed"}.get(value, value) if isinstance(value, int) else value


class EvaluationConfig(Strict):
    """How `tgatunet evaluate` scores a run."""

    eval_gap_max: float = Field(default=0.25, gt=0.0, le=1.0, description="Pattern gaps: each observed channel of a test window loses one contiguous "
                                "run of up to this share of window_size.")
    eval_point_prob: float = Field(default=0.1, gt=0.0, lt=1.0, description="Pattern points: the share of observed test values hidden one by one.")
    eval_seed: Seed = Field(default=0, description="Seed of the values evaluation hides: the same for every run and seed.")
    interval_coverage: float = Field(default=0.9, gt=0.0, lt=1.0, description="Nominal coverage of the completion intervals "
                                     "(<ch>_lower, <ch>_upper; predict/complete --interval) and of those evaluate scores.")
    saits_epochs: int = Field(default=1000, ge=1, description="SAITS peer (--baselines saits): the most epochs it may train; saits_patience, not "
                              "this cap, should end it.")
    saits_patience: int = Field(default=15, ge=1, description="SAITS peer: epochs without a lower validation completion MAE that end its training "
                                "(the best epoch is kept).")
    ridge_lags: int = Field(default=3, ge=0, description="Ridge baseline: context steps on each side.")
    ridge_alpha: float = Field(default=1.0, ge=0.0, description="Ridge baseline: L2 penalty.")


SECTIONS: dict[str, type[Strict]] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "performance": PerformanceConfig,
                                     "evaluation": EvaluationConfig}


def resolve(base: str | Path, path: str) -> Path:
    """``path`` if absolute, else relative to ``base`` (``~`` was expanded when the config was read: :data:`PathText`)."""
    p = Path(path)
    return p if p.is_absolute() else Path(base) / p
