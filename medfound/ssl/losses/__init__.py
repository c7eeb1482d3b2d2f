"""Self-supervised losses, each a plain function of projections, global-batch aware under
``tf.distribute``: NT-Xent (SimCLR), RELIC, Barlow Twins, MoCo v2 InfoNCE and BYOL."""
from medfound.ssl.losses.barlow import BarlowOutput, barlow_twins_loss
from medfound.ssl.losses.byol import BYOLOutput, byol_loss
from medfound.ssl.losses.moco import MoCoOutput, moco_loss
from medfound.ssl.losses.ntxent import (NTXentOutput, check_temperature, contrastive_accuracy,
                                        logits_entropy, nt_xent_loss)
from medfound.ssl.losses.relic import RelicOutput, relic_loss

__all__ = ["BYOLOutput", "BarlowOutput", "MoCoOutput", "NTXentOutput", "RelicOutput",
           "barlow_twins_loss", "byol_loss", "check_temperature", "contrastive_accuracy",
           "logits_entropy", "moco_loss", "nt_xent_loss", "relic_loss"]
