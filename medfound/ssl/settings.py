"""The settings of the self-supervised objectives, importable without TensorFlow (configs, the CLI)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class MethodOptions:
    """The knobs a user sets for the objective; None means the method's own default (``Method.defaults``)."""

    projection_layers: int | None = None
    projection_hidden_dim: int | None = None  # None: the backbone's embedding size
    projection_dim: int | None = None
    temperature: float | None = None  # SimCLR, RELIC, MoCo
    barlow_lambda: float = 0.0051  # Barlow Twins off-diagonal weight
    relic_alpha: float = 1.0  # RELIC invariance weight
    moco_queue_size: int = 16384  # MoCo negatives kept from earlier batches
    ema_momentum: float | None = None  # BYOL / MoCo target momentum at step 0 (cosine to 1)


@dataclasses.dataclass
class MethodSettings(MethodOptions):
    """The options plus what the run supplies: the length of the EMA schedule and the seed."""

    total_steps: int = 1000  # length of the EMA schedule
    seed: int = 0

    def with_defaults(self, defaults: dict) -> "MethodSettings":
        """A copy where every None field named in ``defaults`` takes the default."""
        return dataclasses.replace(self, **{k: v for k, v in defaults.items()
                                            if getattr(self, k) is None})
