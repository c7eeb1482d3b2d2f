"""Parsing shared by subcommands: repeatable KEY=VALUE options with typed values."""
from __future__ import annotations


def parse_key_values(items: list[str], flag: str) -> dict:
    """'key=value' strings -> {key: value}; ints, floats, booleans, 'none' and comma tuples parsed.

    ``crop_area=0.4,1`` gives ``(0.4, 1)``; ``elastic_prob=0`` gives ``0``.
    """
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            from medfound.errors import UserError

            raise UserError(f"{flag} takes KEY=VALUE, got {item!r}")
        values = [scalar(v) for v in text.split(",")]
        options[key.strip()] = tuple(values) if len(values) > 1 else values[0]
    return options


def scalar(text: str):
    """A command-line value as bool, None, int, float or, failing those, the string itself."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
