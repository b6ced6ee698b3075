"""Tests of the typed config: the guide's keys and presets, clear errors, the template, the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tgatunet.cli import app
from tgatunet.config import (
    FIELDS,
    PRESETS,
    config_from_dict,
    config_template,
    load_config,
)
from tgatunet.data.sources import source_path
from tgatunet.errors import ConfigError

# The YAML blocks of the performance guide, pasted verbatim (comments included).
GUIDE_BLOCKS = {
    "all_optimizations": """\
# config.yaml
use_optimized_model: true        # 使用优化版模型
use_memory_optimizer: true       # 使用内存优化器
use_gradient_checkpoint: true    # 使用梯度检查点
batch_size: 16                   # 适中的批大小
encoder_layers: 2                # 减少编码器层数
decoder_layers: 2                # 减少解码器层数
transformer_layers: 1            # 减少Transformer层数
attention_heads: 2               # 减少注意力头数
""",
    "low": """\
batch_size: 8
hidden_channels: 32
encoder_layers: 1
decoder_layers: 1
transformer_layers: 1
attention_heads: 1
use_gradient_checkpoint: true
""",
    "medium": """\
batch_size: 16
hidden_channels: 64
encoder_layers: 2
decoder_layers: 2
transformer_layers: 1
attention_heads: 2
use_gradient_checkpoint: true
""",
    "high": """\
batch_size: 32
hidden_channels: 128
encoder_layers: 3
decoder_layers: 3
transformer_layers: 2
attention_heads: 4
use_gradient_checkpoint: false  # 可选
""",
}

GUIDE_KEYS = {
    "use_optimized_model",
    "use_memory_optimizer",
    "use_gradient_checkpoint",
    "batch_size",
    "hidden_channels",
    "encoder_layers",
    "decoder_layers",
    "transformer_layers",
    "attention_heads",
}


def _base(dataset) -> dict:
    return copy.deepcopy(dataset["config"])


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, origin="test.yaml")
    return str(info.value)


def _flat(text: str) -> str:
    """Collapse whitespace (rich wraps long lines in CLI output)."""
    return " ".join(text.split())


# --- the performance guide's keys and presets --------------------------------


@pytest.mark.parametrize("block", sorted(GUIDE_BLOCKS))
def test_guide_yaml_block_pastes_in_verbatim(dataset, block):
    text = GUIDE_BLOCKS[block]
    guide = yaml.safe_load(text)
    base = {k: v for k, v in _base(dataset).items() if k not in GUIDE_KEYS}
    path = dataset["dir"] / "guide.yaml"
    # The guide block is pasted as it is, above the data settings.
    path.write_text(text + yaml.safe_dump(base), encoding="utf-8")
    cfg = load_config(path)
    for key, value in guide.items():
        assert cfg.flat()[key] == value, key
        assert type(cfg.flat()[key]) is type(value), key


@pytest.mark.parametrize("preset", ["low", "medium", "high"])
def test_presets_merge_into_valid_config(dataset, preset):
    assert set(PRESETS) == {"low", "medium", "high"}
    assert PRESETS[preset] == yaml.safe_load(GUIDE_BLOCKS[preset]), "preset differs from the guide's table"
    raw = _base(dataset)
    raw.update(PRESETS[preset])
    cfg = config_from_dict(raw)
    for key, value in PRESETS[preset].items():
        assert cfg.flat()[key] == value, key


def test_guide_keys_time_k_window_size_accepted(dataset):
    raw = _base(dataset)
    raw.update(time_k=3, window_size=32)
    cfg = config_from_dict(raw)
    assert (cfg.model.time_k, cfg.data.window_size) == (3, 32)


# --- unknown keys --------------------------------------------------------------


def test_unknown_top_level_key_suggests_closest(dataset):
    raw = _base(dataset)
    raw["batch_sise"] = raw.pop("batch_size")
    msg = _error(raw)
    assert "batch_sise" in msg
    assert "Did you mean 'batch_size'" in msg


def test_unknown_source_key_suggests_closest(dataset):
    raw = _base(dataset)
    raw["sources"][0]["hav"] = raw["sources"][0].pop("have")
    msg = _error(raw)
    assert "'hav'" in msg
    assert "Did you mean 'have'" in msg
    assert "sources[0]" in msg


def test_unknown_key_without_close_match_lists_valid_keys(dataset):
    raw = _base(dataset)
    raw["zzqqxx"] = 1
    msg = _error(raw)
    assert "zzqqxx" in msg
    assert "Did you mean" not in msg
    for key in ("batch_size", "label_col", "sources", "use_optimized_model", "window_size"):
        assert key in msg
    assert "config_dir" not in msg


def test_unknown_source_key_without_close_match_lists_source_keys(dataset):
    raw = _base(dataset)
    raw["sources"][1]["qqqq"] = 1
    msg = _error(raw)
    assert "qqqq" in msg and "sources[1]" in msg
    for key in ("name", "path", "have", "need", "block_col", "label_col"):
        assert key in msg


# --- types, ranges and consistency ----------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("batch_size", "big", "integer"),
        ("batch_size", 0, "greater than or equal to 1"),
        ("val_fraction", 1.5, "less than 1"),
        ("precision", "64", "bf16-mixed"),
        ("label_rule", "first", "majority"),
        ("use_optimized_model", "maybe", "bool"),
    ],
)
def test_wrong_type_or_range_names_key_and_what_is_allowed(dataset, key, value, allowed):
    raw = _base(dataset)
    raw[key] = value
    msg = _error(raw)
    assert f"'{key}'" in msg
    assert allowed in msg
    assert repr(value) in msg  # says what it got
    assert "test.yaml" in msg


def test_hidden_channels_must_be_divisible_by_heads(dataset):
    raw = _base(dataset)
    raw.update(hidden_channels=30, attention_heads=4)
    msg = _error(raw)
    assert "hidden_channels (30)" in msg and "attention_heads (4)" in msg and "divisible" in msg


def test_duplicate_source_names(dataset):
    raw = _base(dataset)
    raw["sources"][1]["name"] = "full"
    msg = _error(raw)
    assert "unique" in msg and "'full'" in msg


def test_channel_in_both_have_and_need(dataset):
    raw = _base(dataset)
    raw["sources"][0]["need"] = ["c"]
    msg = _error(raw)
    assert "'full'" in msg and "'c'" in msg and "both 'have' and 'need'" in msg


def test_common_modality_in_have(dataset):
    raw = _base(dataset)
    raw["sources"][0]["have"] = ["a", "c"]
    msg = _error(raw)
    assert "'full'" in msg and "'a'" in msg and "common" in msg


@pytest.mark.parametrize("key", ["label_col", "sources"])
def test_missing_required_key(dataset, key):
    raw = _base(dataset)
    del raw[key]
    msg = _error(raw)
    assert f"'{key}'" in msg and "required" in msg


def test_empty_sources_list(dataset):
    raw = _base(dataset)
    raw["sources"] = []
    msg = _error(raw)
    assert "'sources'" in msg


def test_fractions_must_leave_training_blocks(dataset):
    raw = _base(dataset)
    raw.update(val_fraction=0.5, test_fraction=0.5)
    msg = _error(raw)
    assert "val_fraction" in msg and "test_fraction" in msg


def test_missing_config_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "nowhere.yaml" in msg and "not found" in msg
    assert "config template" in msg


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("batch_size: [1, 2\nlabel_col: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "broken.yaml" in msg and "not valid YAML" in msg


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "mapping" in str(info.value)


def test_empty_file_reports_required_keys(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "'sources'" in msg and "'label_col'" in msg


# --- the template ----------------------------------------------------------------


@pytest.mark.parametrize("preset", [None, "low", "medium", "high"])
def test_template_parses_and_validates(dataset, preset):
    text = config_template(preset)
    parsed = yaml.safe_load(text)
    assert isinstance(parsed, dict)
    expected_keys = set(FIELDS)
    assert set(parsed) == expected_keys
    # Every key is also explained by a comment on its line.
    for key in expected_keys - {"sources", "common_modalities"}:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
        assert "#" in line, key

    base = dataset["config"]
    parsed["sources"] = copy.deepcopy(base["sources"])
    parsed["common_modalities"] = list(base["common_modalities"])
    cfg = config_from_dict(parsed)
    defaults = FIELDS
    for key in expected_keys - {"sources", "common_modalities", "label_col", "block_col", "split_col"}:
        if preset and key in PRESETS[preset]:
            assert cfg.flat()[key] == PRESETS[preset][key], key
        else:
            assert cfg.flat()[key] == defaults[key].get_default(call_default_factory=True), key


def test_template_example_sources_are_valid():
    # The template as printed (bundled example sources) validates without edits.
    cfg = config_from_dict(yaml.safe_load(config_template()))
    assert [s.name for s in cfg.data.sources] == ["watch_full", "watch_acc"]
    for src in cfg.data.sources:
        assert source_path(cfg, src).is_file()


# --- derived values ----------------------------------------------------------------


def test_channels_are_ordered_union(dataset):
    raw = _base(dataset)
    raw["common_modalities"] = ["z", "a"]
    raw["sources"] = [
        {"name": "s1", "path": "x.csv", "have": ["c", "b"], "need": ["d", "f"]},
        {"name": "s2", "path": "y.csv", "have": ["d"], "need": ["b", "e"]},
        {"name": "s3", "path": "w.csv", "have": ["e", "f"], "need": ["c"]},
    ]
    cfg = config_from_dict(raw)
    assert cfg.channels == ["z", "a", "c", "b", "d", "f", "e"]


def test_a_need_channel_no_source_has_is_an_error_with_a_hint(dataset):
    raw = _base(dataset)
    raw["sources"][1]["need"] = ["cc"]  # a typo of c
    with pytest.raises(ConfigError, match="'cc' is needed by \\['partial'\\] but no source has it.*Did you mean 'c'"):
        config_from_dict(raw)


def test_relative_source_paths_resolve_against_config_folder(dataset, tmp_path, monkeypatch):
    raw = _base(dataset)
    raw["sources"][0]["path"] = "../full.csv"
    raw["sources"][1]["path"] = "partial.csv"  # next to the config file
    sub = tmp_path / "configs"
    sub.mkdir()
    (sub / "partial.csv").write_bytes(dataset["paths"]["partial"].read_bytes())
    path = sub / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = load_config(Path("..") / "configs" / "cfg.yaml")
    assert source_path(cfg, cfg.data.sources[0]).resolve() == dataset["paths"]["full"].resolve()
    assert source_path(cfg, cfg.data.sources[1]).resolve() == (sub / "partial.csv").resolve()

    from tgatunet.data.sources import load_source

    table = load_source(cfg, cfg.data.sources[0], None)
    assert len(table.values) == len(dataset["frames"]["full"])


def test_absolute_source_path_kept(dataset):
    cfg = load_config(dataset["write"](_base(dataset)))
    assert source_path(cfg, cfg.data.sources[0]) == dataset["paths"]["full"]


# --- the CLI -----------------------------------------------------------------------


def test_cli_config_template():
    result = CliRunner().invoke(app, ["config", "template"])
    assert result.exit_code == 0, result.output
    parsed = yaml.safe_load(result.stdout)
    assert set(parsed) == set(FIELDS)


def test_cli_config_template_preset():
    result = CliRunner().invoke(app, ["config", "template", "--preset", "high"])
    assert result.exit_code == 0, result.output
    parsed = yaml.safe_load(result.stdout)
    for key, value in PRESETS["high"].items():
        assert parsed[key] == value


def test_cli_template_then_validate_round_trip(tmp_path):
    # The documented first step: write the template, then check it, unchanged.
    runner = CliRunner()
    written = runner.invoke(app, ["config", "template", "--preset", "low"])
    assert written.exit_code == 0
    path = tmp_path / "config.yaml"
    path.write_text(written.stdout, encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_cli_config_template_unknown_preset():
    result = CliRunner().invoke(app, ["config", "template", "--preset", "huge"])
    assert result.exit_code == 2
    assert "huge" in result.output
    assert "Traceback" not in result.output


def test_cli_config_validate_ok(dataset):
    path = dataset["write"](_base(dataset))
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert "Traceback" not in result.output


def test_cli_config_validate_unknown_key(dataset):
    raw = _base(dataset)
    raw["batch_sise"] = raw.pop("batch_size")
    path = dataset["write"](raw)
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2, result.output
    out = _flat(result.output)
    assert "batch_sise" in out
    assert "Did you mean 'batch_size'" in out
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_config_validate_missing_file(tmp_path):
    result = CliRunner().invoke(app, ["config", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "not found" in _flat(result.output)
    assert "Traceback" not in result.output


def test_cli_config_validate_data_error(dataset):
    raw = _base(dataset)
    raw["sources"][0]["path"] = str(dataset["dir"] / "missing.csv")
    path = dataset["write"](raw)
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "missing.csv" in "".join(result.output.split())  # rich may fold a long path
    assert "Traceback" not in result.output


def test_precision_written_as_plain_yaml_number(dataset):
    # `precision: 32` is how Lightning users write it; YAML reads it as an int.
    raw = _base(dataset)
    path = dataset["dir"] / "prec.yaml"
    path.write_text(yaml.safe_dump(raw) + "precision: 32\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.performance.precision == "32"
