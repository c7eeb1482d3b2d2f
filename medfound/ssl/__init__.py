"""Self-supervised pieces: heads (heads.py), losses (losses/), EMA targets (ema.py) and the
objectives that combine them for the pretraining loop (methods/: SimCLR, Barlow Twins, MoCo v2,
BYOL, RELIC)."""
from medfound.ssl.heads import ProjectionHead
from medfound.ssl.losses import (
    NTXentOutput,
    barlow_twins_loss,
    byol_loss,
    check_temperature,
    contrastive_accuracy,
    logits_entropy,
    moco_loss,
    nt_xent_loss,
    relic_loss,
)

__all__ = ["NTXentOutput", "ProjectionHead", "barlow_twins_loss", "byol_loss", "check_temperature",
           "contrastive_accuracy", "logits_entropy", "moco_loss", "nt_xent_loss", "relic_loss"]
