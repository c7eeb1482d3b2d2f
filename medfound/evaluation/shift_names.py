"""The synthetic shifts' names and severity range, importable without TensorFlow (the CLI's choices)."""

SHIFT_KINDS = ("contrast", "sharpness", "tint", "zoom", "gamma")
MAX_SEVERITY = 5.0
DEFAULT_SEVERITIES = (0, 1, 2, 3, 4, 5)
