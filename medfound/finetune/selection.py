"""Hyperparameter selection on validation data: the fine-tuning settings a comparison is fair under.

Comparing initialisations means nothing unless each is tuned as carefully as the others, so the
settings (learning rate, epoch budget, ...) are chosen per module on the **validation** AUC,
never on test. ``select_hyperparameters`` fine-tunes one module once per candidate (a dict of
``FinetuneConfig`` fields) with all training labels and keeps the best; its ``config`` is the base
to hand to ``label_efficiency``, whose sweep then reuses the selection's own run.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medfound.finetune.config import FinetuneConfig
from medfound.utils.files import atomic_path

# What the selection itself sets: candidates may not override these.
RESERVED = ("module", "out_dir", "label_fraction", "seed")


@dataclasses.dataclass
class Selection:
    """The winning candidate, the base config carrying it, and every candidate's scores."""

    chosen: dict[str, Any]  # the winning overrides, e.g. {"learning_rate": 0.05, "epochs": 6}
    config: FinetuneConfig  # base with ``chosen`` applied; out_dir is the winner's folder
    tried: list[dict]  # per candidate: its overrides, val_auc, best_epoch, epochs_run, run_dir
    metric: str = "val mean_auc"

    def to_json(self) -> dict:
        return {"chosen": self.chosen, "tried": self.tried, "metric": self.metric,
                "out_dir": self.config.out_dir}


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the given field values, in order: ``grid(learning_rate=[0.01, 0.05],
    epochs=[2, 6])`` is 4 candidates, the first value of each field varying slowest. Put the
    cheaper or more conservative value first: ties go to the earlier candidate."""
    keys = list(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]


def candidate_name(candidate: Mapping[str, Any]) -> str:
    """The candidate's folder name, e.g. 'learning_rate0.05_epochs6'."""
    def text(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    return "_".join(f"{key}{text(value)}" for key, value in candidate.items()) or "base"


def select_hyperparameters(base: FinetuneConfig, candidates: Sequence[Mapping[str, Any]], *,
                           seed: int = 0) -> Selection:
    """Fine-tunes ``base.module`` with 100 % of the labels (``seed``) once per candidate and
    keeps the candidate with the best validation mean AUC (ties and missing AUCs: the earlier).

    Each candidate's runs live in ``base.out_dir/candidate_name(candidate)`` in the layout of
    ``medfound.finetune.label_efficiency`` (finished runs are reused, so a selection resumes),
    and the choice is written to ``base.out_dir/selection.json``. Passing ``Selection.config``
    to ``label_efficiency`` with the same module makes its (100 %, ``seed``) run the one already
    done here. The early stopping in ``base`` (``patience``) still applies inside each run.
    """
    from medfound.finetune.label_efficiency import label_efficiency

    if not candidates:
        raise ValueError("select_hyperparameters needs at least one candidate")
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    for candidate in candidates:
        bad = sorted(set(candidate) - fields)
        reserved = sorted(set(candidate) & set(RESERVED))
        if bad or reserved:
            raise ValueError(f"candidate {dict(candidate)}: "
                             + (f"not FinetuneConfig fields {bad}" if bad else
                                f"{reserved} are set by the selection itself"))
    names = [candidate_name(c) for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate candidates: {names}")
    out = Path(base.out_dir)
    configs = [dataclasses.replace(base, out_dir=str(out / name), **dict(c))
               for c, name in zip(candidates, names)]
    for config in configs:  # every candidate valid before the first run starts
        dataclasses.replace(config, seed=seed).validate()
    tried = []
    for candidate, config in zip(candidates, configs):
        try:
            run = label_efficiency(config, [base.module], [1.0], [seed],
                                   baseline=base.module).runs[0]
        except (ValueError, ArithmeticError) as err:  # configs checked above: the run failed (a
            # rate that diverges gives non-finite scores); it loses the selection, the rest go on
            tried.append({**dict(candidate), "val_auc": None, "error": str(err).splitlines()[0],
                          "run_dir": config.out_dir})
            continue
        metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        tried.append({**dict(candidate), "val_auc": metrics["val"]["mean_auc"],
                      "best_epoch": metrics.get("best_epoch"),
                      "epochs_run": metrics.get("epochs_run"), "run_dir": run["run_dir"]})
    if all("error" in entry for entry in tried):
        raise ValueError(f"{out}: every candidate's run failed: "
                         + "; ".join(f"{candidate_name(c)}: {t['error']}"
                                     for c, t in zip(candidates, tried)))

    def score(entry: dict) -> float:
        value = entry["val_auc"]
        return -math.inf if value is None or math.isnan(value) else value

    best = max(range(len(tried)), key=lambda i: (score(tried[i]), -i))
    selection = Selection(dict(candidates[best]), configs[best], tried)
    with atomic_path(out / "selection.json") as tmp:
        tmp.write_text(json.dumps(selection.to_json(), indent=2, allow_nan=True) + "\n")
    return selection
