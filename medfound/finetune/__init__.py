"""Fine-tuning and probing of pretrained backbones (linear_probe.py)."""
