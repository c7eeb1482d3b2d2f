"""BiT ResNetV2 backbones (bit.py), their layers (layers.py), sizes (configs.py) and BiT
weight import (bit_weights.py). Import from the submodules, or use the names re-exported by
the top-level ``medfound`` package."""
