"""Self-supervised (SimCLR-style) pieces: the projection head and the NT-Xent contrastive loss."""
from medfound.ssl.heads import ProjectionHead
from medfound.ssl.losses import (
    NTXentOutput,
    check_temperature,
    contrastive_accuracy,
    logits_entropy,
    nt_xent_loss,
)

__all__ = ["NTXentOutput", "ProjectionHead", "check_temperature", "contrastive_accuracy",
           "logits_entropy", "nt_xent_loss"]
