"""``report.md``: the measured figures against the performance guide's promises, and the headline figures.

The guide (DESIGN section 1) promised, per optimisation, a speed-up, a memory
saving and a parameter reduction as ranges. Each promise is compared with the
figures in ``results.json`` that measure it (:data:`GUIDE`):

* **met**: the figure is inside the promised range, or beyond it on the good
  side (a larger speed-up or saving than promised; the note says "above the
  promised range");
* **not met**: the figure falls short of the range;
* **not measured**: no figure measures it (the note says why), or its section
  is missing from ``results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgatunet.files import atomic_write_text


@dataclass(frozen=True)
class Figure:
    """A figure of ``results.json`` that measures a promise.

    Attributes:
        label: what it measures, in words.
        key: dotted path in ``results.json`` (``model.medium.lite_step_speedup``).
        inverse: the guide's quantity is 1 / the figure (a speed-up from a time ratio).
    """

    label: str
    key: str
    inverse: bool = False


@dataclass(frozen=True)
class Promise:
    """One cell of the guide's table: ``low``-``high`` (``x``: a speed ratio; ``%``: a fraction shown in %)."""

    optimisation: str
    column: str
    low: float
    high: float
    unit: str
    figures: tuple[Figure, ...] = ()
    unmeasured: str = ""

    @property
    def promised(self) -> str:
        if self.unit == "%":
            return f"{self.low:.0%}-{self.high:.0%}"
        return f"{self.low:g}-{self.high:g}x"


def _presets(label: str, key: str, inverse: bool = False) -> tuple[Figure, ...]:
    return tuple(Figure(f"{label}, {p} preset", f"model.{p}.{key}", inverse) for p in ("medium", "high"))


GUIDE: tuple[Promise, ...] = (
    Promise(
        "graph-construction cache",
        "speed-up",
        2,
        5,
        "x",
        (
            Figure(
                "temporal graph, window 128: one vectorised table for the batch vs per-window Python loops",
                "graph.temporal_speedup_vectorised_vs_naive",
            ),
            Figure("knn graph, window 128: disk cache read-back vs rebuild", "graph.knn_speedup_disk_cache_vs_rebuild"),
            Figure(
                "prediction over every window, knn graph: warm disk cache vs rebuild", "graph.predict_speedup_cache_on_vs_off"
            ),
        ),
    ),
    Promise(
        "graph-construction cache",
        "memory saved",
        0.10,
        0.20,
        "%",
        unmeasured="the graph section times graph construction; no benchmark compares memory with the cache on and off",
    ),
    Promise("lightweight model", "speed-up", 1.5, 3, "x", _presets("training step, lite vs standard", "lite_step_speedup")),
    Promise(
        "lightweight model",
        "memory saved",
        0.30,
        0.50,
        "%",
        _presets("peak training-step memory, lite vs standard", "lite_peak_memory_reduction"),
    ),
    Promise(
        "lightweight model",
        "fewer parameters",
        0.40,
        0.60,
        "%",
        _presets("parameters, lite vs standard", "lite_param_reduction"),
    ),
    Promise(
        "memory optimizer",
        "memory saved",
        0.20,
        0.40,
        "%",
        (Figure("peak training memory, same batch, optimizer on (budget it had to act under) vs off", "memory.saving_vs_off"),),
    ),
    Promise(
        "gradient checkpointing",
        "speed-up",
        0.8,
        1.2,
        "x",
        _presets("training-step speed, checkpointing on vs off (1 / time ratio)", "checkpoint_step_time_ratio", True),
    ),
    Promise(
        "gradient checkpointing",
        "memory saved",
        0.40,
        0.60,
        "%",
        _presets("peak training-step memory, checkpointing on vs off", "checkpoint_memory_reduction"),
    ),
)


def lookup(results: dict[str, Any], key: str) -> Any:
    """``results["a"]["b"]`` for ``key`` ``"a.b"``; None where any part is missing."""
    node: Any = results
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def judge(value: float, low: float, high: float) -> tuple[str, str]:
    """``(verdict, note)`` of a measured ``value`` against the promised range ``[low, high]``."""
    if value < low:
        return "not met", "below the promised range"
    if value > high:
        return "met", "above the promised range"
    return "met", ""


def _format(value: float, unit: str) -> str:
    return f"{value:.0%}" if unit == "%" else f"{value:.2f}x"


def guide_comparison(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per (promise, figure): optimisation, column, promised, figure, key, measured, verdict, note."""
    rows = []
    for promise in GUIDE:
        base = {"optimisation": promise.optimisation, "column": promise.column, "promised": promise.promised}
        if not promise.figures:
            rows.append({**base, "figure": "-", "key": "-", "measured": "-", "verdict": "not measured",
                         "note": promise.unmeasured})
        for figure in promise.figures:
            raw = lookup(results, figure.key)
            row = {**base, "figure": figure.label, "key": figure.key}
            if raw is None:
                section, name = figure.key.split(".")[0], figure.key.rsplit(".", 1)[-1]
                if section not in results:
                    why = f"no figure: section '{section}' is not in results.json"
                else:  # measured as null: the section says why
                    parent = lookup(results, figure.key.rsplit(".", 1)[0]) or {}
                    why = parent.get(f"{name}_reason") or parent.get(f"{name}_compares") or "measured as null"
                rows.append({**row, "measured": "-", "verdict": "not measured", "note": why})
                continue
            value = 1.0 / raw if figure.inverse else float(raw)
            verdict, note = judge(value, promise.low, promise.high)
            rows.append({**row, "measured": _format(value, promise.unit), "verdict": verdict, "note": note})
    return rows


COLUMNS = ("speed-up", "memory saved", "fewer parameters")


def guide_summary(results: dict[str, Any]) -> list[dict[str, str]]:
    """The guide's table with verdicts: per optimisation, per column, ``promised: verdict``.

    A cell measured by several figures is ``met`` when all of them meet the promise, ``not met`` when
    none does, else ``partly met (k of n figures)``; ``-`` where the guide promised nothing.
    """
    rows = guide_comparison(results)
    table = []
    for optimisation in dict.fromkeys(p.optimisation for p in GUIDE):
        line = {"optimisation": optimisation}
        for column in COLUMNS:
            cell = [r for r in rows if r["optimisation"] == optimisation and r["column"] == column]
            measured = [r for r in cell if r["verdict"] != "not measured"]
            met = sum(r["verdict"] == "met" for r in measured)
            if not cell:
                line[column] = "-"
                continue
            if not measured:
                verdict = "not measured"
            elif met == len(measured):
                verdict = "met"
            elif met == 0:
                verdict = "not met"
            else:
                verdict = f"partly met ({met} of {len(measured)} figures)"
            line[column] = f"{cell[0]['promised']}: {verdict}"
        table.append(line)
    return table


HEADLINE: tuple[tuple[str, str], ...] = (
    ("training throughput", "train.samples_per_second"),
    ("training speed", "train.epochs_per_minute"),
    ("inference throughput", "infer.windows_per_second"),
    ("inference throughput (batches)", "infer.batches_per_second"),
    ("single-window latency, median", "infer.latency_ms_p50"),
    ("single-window latency, p95", "infer.latency_ms_p95"),
    ("single-window latency, compiled, median", "infer.latency_ms_p50_compiled"),
    ("peak memory, training", "peak_memory_gb.train"),
    ("peak memory, inference", "peak_memory_gb.infer"),
    ("memory in use, training (peak)", "memory_use_percent.train"),
    ("memory in use, inference", "memory_use_percent.infer"),
    ("accelerator utilisation, training", "accelerator_utilization_percent.train"),
    ("accelerator utilisation, inference", "accelerator_utilization_percent.infer"),
    ("MFU, training (1 thread)", "mfu.train"),
    ("MFU, training (2 threads)", "mfu.train_2threads"),
    ("MFU, inference", "mfu.infer"),
    ("bottleneck", "breakdown.verdict"),
)


def _unit(results: dict[str, Any], key: str) -> str:
    section, _, name = key.partition(".")
    units = lookup(results, f"{section}.units")
    return units.get(name, "") if isinstance(units, dict) else ""


def headline_figures(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, value with unit, key)`` of the headline figures; missing ones say why."""
    out = []
    for name, key in HEADLINE:
        value = lookup(results, key)
        if value is None:
            section = key.split(".")[0]
            reason = lookup(results, f"{key}_reason") or f"no section '{section}' in results.json"
            text = f"- ({reason})"
        elif isinstance(value, (int, float)):
            text = f"{value:.4g} {_unit(results, key)}".strip()
        else:
            text = str(value)
        out.append((name, text, key))
    for axis in ("window_size", "batch_size", "dataset_size"):
        for kind in ("time", "memory"):
            key = f"scaling.{axis}.{kind}_exponent"
            value = lookup(results, key)
            out.append((f"{kind} exponent vs {axis}", "-" if value is None else f"{value:.2f}", key))
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def render_report(results: dict[str, Any]) -> str:
    """The Markdown of ``report.md`` for a ``results.json`` dict."""
    suite = results.get("suite", {})
    environment = next((s["environment"] for s in results.values() if isinstance(s, dict) and "environment" in s), {})
    lines = [
        "# tgatunet benchmark report",
        "",
        f"Mode: {'quick' if suite.get('quick') else 'full' if suite else 'unknown'}; device: "
        f"{environment.get('device', 'unknown')} (CUDA: {environment.get('cuda', 'unknown')}); torch "
        f"{environment.get('torch', '?')}, lightning {environment.get('lightning', '?')}, tgatunet "
        f"{environment.get('tgatunet', '?')}; torch threads {environment.get('torch_threads', '?')} of "
        f"{environment.get('cpu_count', '?')} CPUs.",
        "Every figure below was measured by this run of the suite; `results.json` holds each with its units, "
        "setting and method.",
        "",
        "## The performance guide's promises",
        "",
        "met: inside the promised range or beyond it on the good side; not met: short of it. Each cell below is "
        "judged by the figures in the next table.",
        "",
    ]
    lines += _table(
        ["optimisation", *COLUMNS], [[r["optimisation"], *(r[c] for c in COLUMNS)] for r in guide_summary(results)]
    )
    lines += ["", "Each figure behind the cells:", ""]
    rows = guide_comparison(results)
    lines += _table(
        ["optimisation", "promise", "promised", "measured by", "measured", "verdict", "note"],
        [[r["optimisation"], r["column"], r["promised"], f"{r['figure']} (`{r['key']}`)" if r["key"] != "-" else "-",
          r["measured"], f"**{r['verdict']}**", r["note"]] for r in rows],
    )
    lines += ["", "## Headline figures", ""]
    setting = lookup(results, "train.setting")
    if setting:
        lines += [
            f"Training and inference at the reference setting: {setting['preset']} preset, window_size "
            f"{setting['window_size']}, {setting['channels']} channels, precision {setting['precision']}, batch "
            f"{setting['batch_size']}, synthetic data.",
            "",
        ]
    lines += _table(["figure", "value", "key in results.json"], [[n, v, f"`{k}`"] for n, v, k in headline_figures(results)])
    skipped = suite.get("skipped", {})
    if skipped:
        lines += ["", "## Sections not run", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    plots = suite.get("plots", [])
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"- `{Path(p).name}`" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], path: Path) -> Path:
    """Write ``render_report(results)`` to ``path``."""
    atomic_write_text(Path(path), render_report(results))
    return Path(path)
