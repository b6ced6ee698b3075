"""The one typed configuration object, its presets and its validation.

A config is one flat YAML file: the performance guide's keys
(``use_optimized_model``, ``batch_size``, ``hidden_channels``, ...) sit at top
level next to the data and training settings, so each YAML block of the guide
pastes in as it is. :func:`load_config` reads a file and returns a validated
:class:`Config`; every mistake becomes a :class:`ConfigError` that names the
key, says what is allowed and, for an unknown key, suggests the closest valid
one.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tgatunet.errors import ConfigError

log = logging.getLogger(__name__)

# The performance guide's hardware presets (DESIGN section 1).
PRESETS: dict[str, dict[str, Any]] = {
    "low": {
        "batch_size": 8,
        "hidden_channels": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "transformer_layers": 1,
        "attention_heads": 1,
        "use_gradient_checkpoint": True,
    },
    "medium": {
        "batch_size": 16,
        "hidden_channels": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "transformer_layers": 1,
        "attention_heads": 2,
        "use_gradient_checkpoint": True,
    },
    "high": {
        "batch_size": 32,
        "hidden_channels": 128,
        "encoder_layers": 3,
        "decoder_layers": 3,
        "transformer_layers": 2,
        "attention_heads": 4,
        "use_gradient_checkpoint": False,
    },
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """One tabular source file and the modalities it has and lacks."""

    name: str = Field(description="Unique name of the source, used in reports and output files.")
    path: str = Field(
        description="CSV or Parquet file; relative paths are relative to the config file, "
        "'bundled:NAME/FILE' names a dataset shipped with tgatunet."
    )
    have: list[str] = Field(
        default_factory=list,
        description="Modality columns this source has, besides common_modalities.",
    )
    need: list[str] = Field(
        default_factory=list,
        description="Modality columns this source lacks and tgatunet completes "
        "(absent from the file, or present but empty).",
    )
    block_col: str | None = Field(default=None, description="Overrides the global block_col.")
    label_col: str | None = Field(default=None, description="Overrides the global label_col.")

    @model_validator(mode="after")
    def _have_and_need_disjoint(self) -> SourceConfig:
        both = sorted(set(self.have) & set(self.need))
        if both:
            raise ValueError(f"source '{self.name}' lists {both} in both 'have' and 'need'")
        return self


class Config(_Strict):
    """Everything a run needs: data, model, training and evaluation settings."""

    # --- the performance guide's keys (accepted verbatim) -------------------
    use_optimized_model: bool = Field(
        default=False, description="Use the lightweight T-GAT-UNet variant (same inputs and outputs)."
    )
    use_memory_optimizer: bool = Field(
        default=False,
        description="Run each training step in the largest micro-batches that keep memory under memory_target "
        "(gradients accumulated, so the step is the same), lower them when memory runs high, "
        "and retry a step that runs out of memory with half the micro-batch.",
    )
    memory_target: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Memory optimizer: keep peak training memory below this fraction of the memory budget.",
    )
    memory_budget_gb: float | None = Field(
        default=None,
        gt=0.0,
        description="Memory optimizer: memory training may use, in GB (2**30 bytes); "
        "null: the GPU's free memory on CUDA, the available RAM on CPU.",
    )
    use_gradient_checkpoint: bool = Field(
        default=False,
        description="Recompute block activations in the backward pass: less memory, a little more time.",
    )
    batch_size: int = Field(default=16, ge=1, description="Windows per training step.")
    hidden_channels: int = Field(default=64, ge=2, description="Width of every hidden layer.")
    encoder_layers: int = Field(default=2, ge=1, description="GAT levels in the encoder.")
    decoder_layers: int = Field(default=2, ge=1, description="GAT levels in the decoder.")
    transformer_layers: int = Field(default=1, ge=0, description="Transformer layers in the bottleneck.")
    attention_heads: int = Field(default=2, ge=1, description="Heads of every GAT and attention layer.")
    time_k: int = Field(default=1, ge=1, description="Temporal graph: each step is linked to the steps within time_k.")
    window_size: int = Field(default=50, ge=4, description="Time steps per window.")
    hardware_profile: Literal["auto", "low", "medium", "high"] | None = Field(
        default=None,
        description="Apply the guide's preset (low, medium, high) to the model and batch keys this file does "
        "not set; auto picks it by the training device's memory (or memory_budget_gb). null: no preset.",
    )

    # --- data --------------------------------------------------------------
    sources: list[SourceConfig] = Field(min_length=1, description="The data sources (see the example above).")
    common_modalities: list[str] = Field(
        default_factory=list, description="Modality columns that every source has."
    )
    block_col: str | None = Field(
        default=None,
        description="Column naming contiguous recordings (subject/session); none: each file is one block.",
    )
    label_col: str = Field(description="Column holding the class of each row (int or string).")
    split_col: str | None = Field(
        default=None,
        description="Optional column fixing each block's split (train/val/test); "
        "without 'val' values, validation blocks are drawn from the train blocks.",
    )
    step_size: int | None = Field(default=None, ge=1, description="Stride between windows; default window_size // 2.")
    downsample: int = Field(default=1, ge=1, description="Take every n-th row inside a window.")
    label_rule: Literal["last", "majority"] = Field(
        default="last", description="Window label: the label of its last row, or the most frequent one."
    )
    val_fraction: float = Field(default=0.15, ge=0.0, lt=1.0, description="Share of blocks for validation.")
    test_fraction: float = Field(
        default=0.15, ge=0.0, lt=1.0, description="Share of blocks for testing (when split_col gives no test blocks)."
    )
    seed: int = Field(default=42, description="Seed of splits, masking, initialisation and shuffling.")

    # --- model ---------------------------------------------------------------
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout in the model.")
    ff_multiplier: int = Field(default=2, ge=1, description="Transformer feed-forward width / hidden_channels.")
    graph_type: Literal["temporal", "knn"] = Field(
        default="temporal",
        description="Graph over a window's time steps: 'temporal' links the steps within time_k; 'knn' also links "
        "each step to its graph_knn most similar steps, by the values the model is allowed to see.",
    )
    graph_knn: int = Field(
        default=4, ge=1, description="knn graph: similar steps linked to each step, besides its temporal neighbours."
    )
    use_graph_cache: bool = Field(
        default=True,
        description="knn graph: reuse the graphs of windows seen before (memory LRU + disk cache) instead of "
        "rebuilding them.",
    )
    graph_cache_dir: str | None = Field(
        default=None,
        description="Disk cache of knn graphs (relative to the working directory); default <run_dir>/graph_cache. "
        "Entries are keyed by content, so runs may share one.",
    )
    graph_cache_max_mb: float = Field(
        default=1024.0, gt=0.0, description="Disk cache size limit; least recently used entries are evicted beyond it."
    )
    graph_memory_cache_mb: float = Field(
        default=256.0, ge=0.0, description="In-process LRU of knn graphs in front of the disk cache; 0 disables it."
    )

    # --- training --------------------------------------------------------------
    epochs: int = Field(default=60, ge=1, description="Maximum training epochs.")
    lr: float = Field(default=2e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, ge=0.0, description="AdamW weight decay.")
    patience: int = Field(default=12, ge=1, description="Early stopping: epochs without a better validation loss.")
    grad_clip: float | None = Field(default=1.0, gt=0.0, description="Gradient norm clipping; null disables it.")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field(
        default="32", description="Numeric precision, through Lightning."
    )
    compile: bool = Field(
        default=False,
        description="Run the model through torch.compile, in training and when the trained run predicts "
        "(evaluate, complete); where that is not supported, warn and run eagerly.",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        default="auto", description="Where to train; auto picks CUDA when it is there."
    )
    devices: int | Literal["auto"] = Field(
        default=1, description="Processes (GPUs, or CPU processes) per machine; more than 1 trains with DDP."
    )
    num_nodes: int = Field(default=1, ge=1, description="Machines taking part in one training (torchrun, SLURM).")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        default="auto",
        description="Lightning strategy: auto (DDP when devices x num_nodes > 1), ddp, or fsdp (GPUs only).",
    )
    data_store: str | None = Field(
        default=None,
        description="Folder written by `tgatunet data prepare`: training reads windows from it lazily "
        "(relative to the config file); null reads the sources into memory.",
    )
    num_workers: int | None = Field(
        default=None,
        ge=0,
        description="DataLoader worker processes; null: 2 when training on CUDA (batches prepared while the GPU "
        "computes), 0 on CPU (workers would take the cores the model needs).",
    )
    mask_pattern_prob: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Chance that a training window hides the channels another source needs.",
    )
    mask_channel_prob: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Chance that each other observed channel is hidden."
    )
    mask_step_prob: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Chance that each observed value is hidden on its own."
    )
    recon_loss: Literal["mse", "l1", "huber"] = Field(
        default="mse", description="Reconstruction loss on hidden observed values."
    )
    recon_weight: float = Field(default=1.0, ge=0.0, description="Weight of the reconstruction loss.")
    cls_weight: float = Field(default=0.5, ge=0.0, description="Weight of the classification loss.")
    dynamic_need_update: bool = Field(
        default=False,
        description="Every need_update_every epochs from need_update_start, complete the need channels of "
        "the training windows and feed them as inputs (never as targets; validation/test are never written). "
        "Not with data_store.",
    )
    need_update_every: int = Field(default=5, ge=1, description="Epochs between two dynamic need updates.")
    need_update_start: int = Field(
        default=10, ge=0, description="First epoch (counted from 0) of the dynamic need update."
    )
    run_dir: str | None = Field(
        default=None, description="Run directory (relative to the working directory); default runs/<config name>."
    )

    # --- evaluation --------------------------------------------------------------
    ridge_lags: int = Field(default=3, ge=0, description="Ridge baseline: context steps on each side.")
    ridge_alpha: float = Field(default=1.0, ge=0.0, description="Ridge baseline: L2 penalty.")

    # Where the file was read from; relative source paths resolve against it.
    config_dir: str = Field(default=".", exclude=True, description="(set by load_config)")

    @model_validator(mode="before")
    @classmethod
    def _apply_hardware_profile(cls, raw: Any) -> Any:
        # The preset fills only the keys the file does not set: explicit keys always win.
        if not isinstance(raw, dict) or raw.get("hardware_profile") is None:
            return raw
        profile = raw["hardware_profile"]
        if profile == "auto":
            from tgatunet.hardware import auto_profile

            budget = raw.get("memory_budget_gb")
            budget = budget if isinstance(budget, (int, float)) and budget > 0 else None  # else: its own error
            profile, memory_gb, by = auto_profile(str(raw.get("accelerator", "auto")), budget)
            log.info("hardware_profile auto: %.1f GB (%s) -> preset '%s'", memory_gb, by, profile)
        if profile not in PRESETS:
            return raw  # the field's own validation names the allowed values
        # The resolved preset is kept, so a run's saved config says which one was applied.
        return {**PRESETS[profile], **raw, "hardware_profile": profile}

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as a number; Lightning users write it that way.
        return {32: "32", 16: "16-mixed"}.get(value, value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.hidden_channels % self.attention_heads:
            raise ValueError(
                f"hidden_channels ({self.hidden_channels}) must be divisible by "
                f"attention_heads ({self.attention_heads})"
            )
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        for s in self.sources:
            clash = sorted(set(self.common_modalities) & (set(s.have) | set(s.need)))
            if clash:
                raise ValueError(
                    f"source '{s.name}' lists common modalities {clash} in have/need; "
                    "common_modalities already belong to every source"
                )
        if not self.channels:
            raise ValueError("no modality configured: set common_modalities or a source's have/need")
        if self.dynamic_need_update:
            if not any(s.need for s in self.sources):
                raise ValueError("dynamic_need_update is on but no source lists 'need' channels: nothing to update")
            if self.need_update_start >= self.epochs:
                raise ValueError(
                    f"need_update_start ({self.need_update_start}) must be below epochs ({self.epochs}), "
                    "or the dynamic need update never runs"
                )
            if self.data_store is not None:
                raise ValueError(
                    "dynamic_need_update keeps a writable copy of the training rows in memory and cannot "
                    "run on a data_store: unset data_store (the sources are read into memory) or the update"
                )
        if self.graph_type == "knn" and self.graph_knn > self.window_size - (2 * self.time_k + 1):
            raise ValueError(
                f"graph_knn ({self.graph_knn}) must leave room in the window: at most window_size - "
                f"(2 * time_k + 1) = {self.window_size - 2 * self.time_k - 1} steps are not temporal neighbours already"
            )
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(f"devices must be a positive number or 'auto' (got {self.devices})")
        if self.strategy == "fsdp" and self.accelerator not in ("gpu", "cuda"):
            raise ValueError(
                f"strategy 'fsdp' shards the model over CUDA GPUs and needs accelerator: gpu "
                f"(got accelerator: {self.accelerator}); use strategy: ddp to train on several CPU processes"
            )
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave blocks for training (sum < 1)")
        return self

    # --- derived values -------------------------------------------------------
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

    def source_path(self, source: SourceConfig) -> Path:
        """Resolve a source's file path (bundled, absolute, or relative to the config file)."""
        from tgatunet.data.datasets import BUNDLED_SCHEME, resolve_bundled

        if source.path.startswith(BUNDLED_SCHEME):
            return resolve_bundled(source.path)
        path = Path(source.path).expanduser()
        return path if path.is_absolute() else Path(self.config_dir) / path

    def data_store_path(self) -> Path | None:
        """The ``data_store`` folder (relative paths against the config file), or None."""
        if self.data_store is None:
            return None
        path = Path(self.data_store).expanduser()
        return path if path.is_absolute() else Path(self.config_dir) / path

    def resolved_run_dir(self, config_name: str = "run") -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / config_name


def _all_keys(model: type[BaseModel]) -> list[str]:
    return [k for k in model.model_fields if k != "config_dir"]


def _check_keys(raw: dict[str, Any], model: type[BaseModel], where: str) -> None:
    valid = _all_keys(model)
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(valid)}."
            raise ConfigError(f"{where}: unknown key '{key}'.{hint}")


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        shown = "" if e["type"] in ("missing", "value_error") else f" (got {e.get('input')!r})"
        if e["type"] == "missing":
            lines.append(f"  - key '{loc}' is required")
        elif e["loc"]:
            lines.append(f"  - key '{loc}': {msg}{shown}")
        else:
            lines.append(f"  - {msg}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], origin: str = "config", config_dir: str | Path = ".") -> Config:
    """Validate a config mapping; ``origin`` names it in error messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of keys to values, got {type(raw).__name__}")
    _check_keys(raw, Config, origin)
    sources = raw.get("sources")
    if isinstance(sources, list):
        for i, src in enumerate(sources):
            if isinstance(src, dict):
                _check_keys(src, SourceConfig, f"{origin}: sources[{i}]")
    try:
        return Config(**raw, config_dir=str(config_dir))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found. Write one with: tgatunet config template > {path.name}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return config_from_dict(raw or {}, origin=str(path), config_dir=path.resolve().parent)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data, as written to a run directory (source paths resolved)."""
    data = config.model_dump(mode="json")
    for src, raw in zip(config.sources, data["sources"]):
        if not src.path.startswith("bundled:"):
            raw["path"] = str(config.source_path(src).resolve())
    if config.data_store is not None:
        data["data_store"] = str(config.data_store_path().resolve())
    return data


_EXAMPLE_SOURCES = """\
# --- data -------------------------------------------------------------------
# Each source is one CSV/Parquet file, one row per time step. The model's
# channels are the ordered union of common_modalities and every have/need.
common_modalities: [acc_x, acc_y, acc_z]
sources:
  - name: watch_full                       # unique name
    path: bundled:basic_motions/watch_full.csv   # or data/my_file.csv (relative to this file)
    have: [gyr_x, gyr_y, gyr_z]            # modalities beyond the common ones
    need: []                               # modalities this source lacks, to complete
  - name: watch_acc
    path: bundled:basic_motions/watch_acc.csv
    need: [gyr_x, gyr_y, gyr_z]
"""


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def config_template(preset: str | None = None) -> str:
    """A complete, commented config: every key with its default and meaning."""
    values = dict(PRESETS[preset]) if preset else {}
    out = [
        "# tgatunet configuration. Every key is optional except sources and label_col.",
        f"# Generated by `tgatunet config template{' --preset ' + preset if preset else ''}`.",
        "",
        _EXAMPLE_SOURCES,
    ]
    sections = {
        "use_optimized_model": "# --- performance guide keys (hardware presets: low / medium / high) ---",
        "block_col": "# --- windows and splits ---",
        "dropout": "# --- model ---",
        "epochs": "# --- training ---",
        "ridge_lags": "# --- evaluation ---",
    }
    for key, field in Config.model_fields.items():
        if key in ("sources", "common_modalities", "config_dir"):
            continue
        if key in sections:
            out.append(sections[key])
        if key in values:
            default = values[key]
        elif key == "label_col":
            default = "activity"
        elif key == "block_col":
            default = "recording"
        elif key == "split_col":
            default = "split"
        else:
            default = field.get_default(call_default_factory=True)
        out.append(f"{key}: {_yaml_value(default)}  # {field.description}")
    return "\n".join(out) + "\n"
