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


def _readme_commands() -> list[str]:
    """The ``tgatunet ...`` lines of the README's code blocks, without their trailing comments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.startswith("tgatunet ")]


def _command(words: list[str]):
    """The click command ``words`` name, and the words left for its options."""
    command = get_command(app)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_the_readme_command_examples_parse_as_written():
    """A concrete example runs as written: the command line parser takes it (files need not exist to parse)."""
    concrete = [c for c in _readme_commands() if not re.search(r"\[|\||\.\.\.|\b[A-Z_]{3,}\b", c)]
    assert concrete, "the README shows no concrete tgatunet command"
    for line in concrete:
        command, words = _command(line.split()[1:])
        command.make_context(line.split()[1], words)  # raises a UsageError on an unknown option or a missing value


def test_every_option_in_the_readme_synopsis_exists():
    for line in _readme_commands():
        command, _ = _command(line.split()[1:])
        options = {o for p in getattr(command, "params", []) for o in [*p.opts, *p.secondary_opts]}
        named = {o for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", line)}
        if hasattr(command, "commands"):  # a group: its subcommands' options
            options |= {o for c in command.commands.values() for p in c.params for o in [*p.opts, *p.secondary_opts]}
        assert named <= options, f"README: '{line}' names options {sorted(named - options)} that do not exist"
