"""The one typed configuration object, its presets and its validation.

A config file is one flat YAML mapping: the performance guide's keys (``use_optimized_model``, ``batch_size``,
``hidden_channels``, ...) sit at top level next to the data and training settings, so each YAML block of the guide
pastes in as it is. In code the keys are grouped by concern (:mod:`tgatunet.config.sections`):
``config.data.window_size``, ``config.model.hidden_channels``, ``config.training.epochs``,
``config.performance.precision``, ``config.evaluation.ridge_lags``.

:func:`load_config` reads a file and :func:`config_from_dict` a mapping; every mistake becomes a :class:`ConfigError`
that names the key, says what is allowed and, for an unknown key, suggests the closest valid one.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from tgatunet.config.sections import (SECTIONS, DataConfig, EvaluationConfig, ModelConfig, PerformanceConfig, SourceConfig, Strict,
                                      TrainingConfig, resolve)
from tgatunet.errors import ConfigError, shown

log = logging.getLogger(__name__)

__all__ = ["Config", "SourceConfig", "PRESETS", "KEYS", "FIELDS", "load_config", "config_from_dict", "config_template"]

# The performance guide's hardware presets (DESIGN section 1).
PRESETS: dict[str, dict[str, Any]] = {
    "low": {"batch_size": 8, "hidden_channels": 32, "encoder_layers": 1, "decoder_layers": 1,
            "transformer_layers": 1, "attention_heads": 1, "use_gradient_checkpoint": True},
    "medium": {"batch_size": 16, "hidden_channels": 64, "encoder_layers": 2, "decoder_layers": 2,
               "transformer_layers": 1, "attention_heads": 2, "use_gradient_checkpoint": True},
    "high": {"batch_size": 32, "hidden_channels": 128, "encoder_layers": 3, "decoder_layers": 3,
             "transformer_layers": 2, "attention_heads": 4, "use_gradient_checkpoint": False},
}

# Every flat key and the section that holds it, and its field (default, description), in template order.
KEYS: dict[str, str] = {key: name for name, section in SECTIONS.items() for key in section.model_fields}
FIELDS = {key: field for section in SECTIONS.values() for key, field in section.model_fields.items()}


def _apply_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """The preset of ``hardware_profile`` fills only the keys the file does not set: explicit keys win."""
    profile = raw.get("hardware_profile")
    if profile == "auto":
        from tgatunet.hardware import auto_profile

        budget = raw.get("memory_budget_gb")
        budget = budget if isinstance(budget, (int, float)) and budget > 0 else None  # else: its own error
        profile, memory_gb, by = auto_profile(str(raw.get("accelerator", "auto")), budget)
        log.info("hardware_profile auto: %.1f GB (%s) -> preset '%s'", memory_gb, by, profile)
    if not isinstance(profile, str) or profile not in PRESETS:
        return raw  # None, or the field's own validation names the allowed values
    # The resolved preset is kept, so a run's saved config says which one was applied.
    return {**PRESETS[profile], **raw, "hardware_profile": profile}


def _check_needs_are_observed(data: DataConfig) -> None:
    """A ``need`` channel must be observed by some source, or the model would complete it from nothing."""
    observed = [*data.common_modalities, *(c for s in data.sources for c in s.have)]
    for source in data.sources:
        for channel in source.need:
            if channel not in observed:
                close = difflib.get_close_matches(channel, observed, n=1, cutoff=0.6)
                hint = f" Did you mean '{close[0]}'?" if close else f" Channels some source has: {sorted(set(observed))}."
                needing = [s.name for s in data.sources if channel in s.need]
                raise ValueError(f"channel '{channel}' is needed by {needing} but no source has it (in common_modalities or a "
                                 f"source's have): nothing could learn it.{hint}")


class Config(Strict):
    """Everything a run needs, by section; built from a flat mapping of keys (:func:`config_from_dict`)."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    # Where the file was read from; relative source and store paths resolve against it.
    config_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _sections_from_flat_keys(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "data" in raw:
            return raw
        raw = _apply_preset(raw)
        nested: dict[str, Any] = {name: {} for name in SECTIONS}
        for key, value in raw.items():
            # An unknown key (and config_dir) stays at top level, where the strict model judges it.
            (nested[KEYS[key]] if key in KEYS else nested)[key] = value
        return nested

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        data, model, training = self.data, self.model, self.training
        if model.hidden_channels % model.attention_heads:
            raise ValueError(f"hidden_channels ({model.hidden_channels}) must be divisible by attention_heads ({model.attention_heads})")
        names = [s.name for s in data.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        for s in data.sources:
            clash = sorted(set(data.common_modalities) & (set(s.have) | set(s.need)))
            if clash:
                raise ValueError(f"source '{s.name}' lists common modalities {clash} in have/need; "
                                 "common_modalities already belong to every source")
        if not data.channels:
            raise ValueError("no modality configured: set common_modalities or a source's have/need")
        _check_needs_are_observed(data)
        if training.dynamic_need_update:
            if not any(s.need for s in data.sources):
                raise ValueError("dynamic_need_update is on but no source lists 'need' channels: nothing to update")
            if training.epochs != "auto" and training.need_update_start >= training.epochs:
                raise ValueError(f"need_update_start ({training.need_update_start}) must be below epochs ({training.epochs}), "
                                 "or the dynamic need update never runs")
            if data.data_store is not None:
                raise ValueError("dynamic_need_update keeps a writable copy of the training rows in memory and cannot "
                                 "run on a data_store: unset data_store (the sources are read into memory) or the update")
        if model.graph_type == "knn" and model.graph_knn > data.window_size - (2 * model.time_k + 1):
            raise ValueError(f"graph_knn ({model.graph_knn}) must leave room in the window: at most window_size - (2 * time_k + 1) "
                             f"= {data.window_size - 2 * model.time_k - 1} steps are not temporal neighbours already")
        perf = self.performance
        if isinstance(perf.devices, int) and perf.devices < 1:
            raise ValueError(f"devices must be a positive number or 'auto' (got {perf.devices})")
        if perf.strategy == "fsdp" and perf.accelerator not in ("gpu", "cuda"):
            raise ValueError(f"strategy 'fsdp' shards the model over CUDA GPUs and needs accelerator: gpu "
                             f"(got accelerator: {perf.accelerator}); use strategy: ddp to train on several CPU processes")
        if data.val_fraction + data.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave blocks for training (sum < 1)")
        return self

    @property
    def channels(self) -> list[str]:
        """The model's channel set (:attr:`DataConfig.channels`)."""
        return self.data.channels

    def resolve(self, path: str) -> Path:
        """A path of the config (a source file, the data store), resolved against the config file's folder."""
        return resolve(self.config_dir, path)

    def data_store_path(self) -> Path | None:
        """The ``data_store`` folder, or None."""
        return None if self.data.data_store is None else self.resolve(self.data.data_store)

    def resolved_run_dir(self, config_name: str = "run") -> Path:
        return Path(self.training.run_dir) if self.training.run_dir else Path("runs") / config_name

    def flat(self) -> dict[str, Any]:
        """Every key as one flat mapping of plain data, as a config file writes them."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(getattr(self, name).model_dump(mode="json"))
        return out

    def with_keys(self, **changes: Any) -> Config:
        """A validated copy with some flat keys changed (e.g. ``use_gradient_checkpoint=False``)."""
        return config_from_dict({**self.flat(), **changes}, origin="config", config_dir=self.config_dir)

    def to_dict(self) -> dict[str, Any]:
        """The flat keys as written to a run directory: source and store paths made absolute."""
        data = self.flat()
        for raw in data["sources"]:
            if raw["path"] is not None and not raw["path"].startswith("bundled:"):
                raw["path"] = str(self.resolve(raw["path"]).resolve())
        if self.data.data_store is not None:
            data["data_store"] = str(self.data_store_path().resolve())
        return data


def _check_keys(raw: dict[str, Any], valid: list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(valid)}."
            raise ConfigError(f"{where}: unknown key {shown(key)}.{hint}")


def _key_of(loc: tuple) -> str:
    """The file's name for an error location: sections and union members (``int``, ``literal['auto']``) left out."""
    kept = [p for p in loc if p not in SECTIONS and p not in ("int", "float", "str", "bool")]
    return ".".join(str(p) for p in kept if not str(p).startswith(("literal[", "function-")))


# A message stays readable whatever the file holds: so many characters a problem, so many problems.
_MAX_MESSAGE, _MAX_PROBLEMS = 1000, 10


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines, by_key = [f"{origin}: invalid configuration"], {}
    for e in err.errors():
        by_key.setdefault(_key_of(e["loc"]), []).append(e)
    for key, errors in list(by_key.items())[:_MAX_PROBLEMS]:
        msg = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errors))
        msg = msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 3] + "..."  # names a user wrote may be huge
        first = errors[0]
        got = "" if first["type"] in ("missing", "value_error") else f" (got {shown(first.get('input'))})"
        if first["type"] == "missing":
            lines.append(f"  - key '{key}' is required")
        elif key:
            lines.append(f"  - key '{key}': {msg}{got}")
        else:
            lines.append(f"  - {msg}")
    if len(by_key) > _MAX_PROBLEMS:
        lines.append(f"  - and {len(by_key) - _MAX_PROBLEMS} more problem(s) like these")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], origin: str = "config", config_dir: str | Path = ".") -> Config:
    """Validate a flat config mapping; ``origin`` names it in error messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of keys to values, got {type(raw).__name__}")
    _check_keys(raw, list(KEYS), origin)
    sources = raw.get("sources")
    if isinstance(sources, list):
        for i, src in enumerate(sources):
            if isinstance(src, dict):
                _check_keys(src, list(SourceConfig.model_fields), f"{origin}: sources[{i}]")
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
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          "save the file as UTF-8 (e.g. in your editor's 'Save with encoding' menu).") from None

    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}': {err.strerror}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return config_from_dict(raw or {}, origin=str(path), config_dir=path.resolve().parent)


_EXAMPLE_SOURCES = """\
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
    need: [gyr_x, gyr_y, gyr_z]"""

_EXAMPLE_VALUES = {"label_col": "activity", "block_col": "recording", "split_col": "split"}


def yaml_value(value: Any) -> str:
    """``value`` as a one-line YAML flow value, as a config file writes it."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def config_template(preset: str | None = None) -> str:
    """A complete, commented config: every key with its default and meaning, by section."""
    values = {**_EXAMPLE_VALUES, **(PRESETS[preset] if preset else {})}
    out = ["# tgatunet configuration. Every key is optional except sources and label_col.",
           f"# Generated by `tgatunet config template{' --preset ' + preset if preset else ''}`."]
    for name, section in SECTIONS.items():
        doc = section.__doc__.strip().rstrip(".")
        out += ["", f"# --- {name}: {doc[0].lower()}{doc[1:]} ---"]
        for key, field in section.model_fields.items():
            if key == "sources":
                out.append(_EXAMPLE_SOURCES)
            elif key != "common_modalities":
                default = values[key] if key in values else field.get_default(call_default_factory=True)
                out.append(f"{key}: {yaml_value(default)}  # {field.description}")
    return "\n".join(out) + "\n"
