"""The README's configuration table, generated from the Settings model so the two never drift."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from stratus.settings import REPO_ROOT, Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, frozenset | set):
        return ",".join(sorted(value)) or "empty"
    text = str(value)
    if text.startswith(str(REPO_ROOT)):
        text = text.replace(str(REPO_ROOT), "<repo>")
    return text


def settings_table() -> str:
    """Markdown table of every STRATUS_* variable with its default and meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(name).replace("|", "\\|")
        lines.append(f"| `STRATUS_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(lines)


def render_into(readme: str) -> str:
    """The README text with its settings table replaced by the current one."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"
