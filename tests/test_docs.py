"""The README stays true to the code: every config key and CLI command is documented."""

import re
from pathlib import Path

from typer.main import get_command

from tgatunet.cli import app
from tgatunet.config import FIELDS, SourceConfig

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_config_key():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    keys = list(FIELDS) + list(SourceConfig.model_fields)
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"README.md does not document config keys {missing}"


def test_readme_names_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = get_command(app).commands
    missing = [name for name in commands if f"tgatunet {name}" not in readme]
    assert not missing, f"README.md does not show commands {missing}"


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:8]
    assert any(line.startswith("make run") for line in head) and any(line.startswith("make test") for line in head)


def test_chinese_performance_guide_keeps_the_english_figures():
    english = (ROOT / "docs" / "PERFORMANCE.md").read_text(encoding="utf-8")
    chinese = (ROOT / "docs" / "PERFORMANCE.zh-CN.md").read_text(encoding="utf-8")
    cells = [cell for line in english.splitlines() if line.startswith("| ") for cell in line.split("|")[3:5]]
    # Every number of the measured columns, with its x or % (the words around it are translated).
    figures = [f.rstrip(".,") for cell in cells for f in re.findall(r"\d[\d.,]*[x%]?", cell)]
    missing = [f for f in figures if f not in chinese]
    assert not missing, f"docs/PERFORMANCE.zh-CN.md lacks figures {missing}"


def test_the_config_reference_says_what_the_code_says():
    """Each key's row in the README's config reference carries the description of its field in the code."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `(\w+)` \| [^|]* \| (.*) \|$", readme, re.MULTILINE)}
    differ = {k: (rows.get(k), f.description) for k, f in {**FIELDS, **SourceConfig.model_fields}.items()
              if k != "sources" and f.description and rows.get(k) != f.description}
    assert not differ, f"README.md's config reference differs from the code for {differ}"
