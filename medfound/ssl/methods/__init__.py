"""Self-supervised objectives for the one pretraining loop, by name (``--method``)."""
from __future__ import annotations

from medfound.registry import SSL_METHODS
from medfound.ssl.methods.barlow import BarlowTwins
from medfound.ssl.methods.base import Method, StepOutput
from medfound.ssl.methods.contrastive import RELIC, SimCLR
from medfound.ssl.methods.momentum import BYOL, KeyQueue, MoCo
from medfound.ssl.settings import MethodOptions, MethodSettings

METHODS: dict[str, type[Method]] = {m.name: m for m in (SimCLR, BarlowTwins, MoCo, BYOL, RELIC)}
if tuple(METHODS) != SSL_METHODS:  # the registry names them; every name needs its class
    raise ImportError(f"medfound.registry.SSL_METHODS {SSL_METHODS} and the method classes "
                      f"{tuple(METHODS)} disagree")


def get_method(name: str, settings: MethodSettings | None = None) -> Method:
    """A new, unbuilt method object for ``name`` (one of ``METHODS``)."""
    if name not in METHODS:
        raise ValueError(f"unknown self-supervised method {name!r}; choose from {list(METHODS)}")
    return METHODS[name](settings)


__all__ = ["BYOL", "BarlowTwins", "KeyQueue", "METHODS", "Method", "MethodOptions", "MethodSettings", "MoCo",
           "RELIC", "SimCLR", "StepOutput", "get_method"]
