"""Self-supervised pieces: heads (heads.py), losses (losses/), EMA targets (ema.py), the objectives'
settings (settings.py) and the objectives that combine them for the pretraining loop (methods/:
SimCLR, Barlow Twins, MoCo v2, BYOL, RELIC).

Names are imported on first use, so ``medfound.ssl.settings`` loads without TensorFlow.
"""
from __future__ import annotations

from medfound.utils.lazy import lazy_attributes

_API = {"ProjectionHead": "medfound.ssl.heads",
        **{name: "medfound.ssl.losses" for name in (
            "NTXentOutput", "barlow_twins_loss", "byol_loss", "check_temperature", "contrastive_accuracy",
            "logits_entropy", "moco_loss", "nt_xent_loss", "relic_loss")}}

__all__ = sorted(_API)


__getattr__ = lazy_attributes(__name__, _API, globals())
