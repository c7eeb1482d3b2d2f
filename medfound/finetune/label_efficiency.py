"""Label efficiency: test AUC of several modules against the fraction of training labels used.

The REMEDIS paper's data-efficient generalisation measure: how small a fraction of the labels a
pretrained model needs to match a baseline trained on all of them. Each (module, fraction, seed)
is one ``finetune`` run in its own folder; finished runs are reused, so a long sweep resumes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.finetune.config import FinetuneConfig
from medfound.utils.files import atomic_path


@dataclasses.dataclass
class LabelEfficiencyResult:
    """Every run's score, the per-(module, fraction) summary and the fraction each needs."""

    runs: list[dict]  # module, fraction, seed, test_mean_auc, run_dir
    summary: dict[str, dict[float, dict]]  # module -> fraction -> {mean, std, n}
    baseline: str
    target_auc: float
    fraction_to_match: dict[str, float | None]  # None: never matched within the fractions tried
    out_dir: Path
    pretraining: dict[str, str] = dataclasses.field(default_factory=dict)  # module -> how it was made


def pretraining_of(module: str) -> str:
    """How a module was pretrained, for comparing methods: 'none (random init)', 'none (BiT)',
    or a medfound module's recorded method and initialisation, e.g. 'byol (bit-m)'."""
    from medfound.resolve import parse_spec

    spec = parse_spec(module)
    if spec.kind == "random":
        return "none (random init)"
    if spec.init or str(spec.path).endswith(".npz"):
        return "none (BiT)"
    from medfound.formats.locate import find_module
    from medfound.formats.metadata import read_metadata

    path = Path(spec.path)
    try:
        meta = read_metadata(path if path.exists() else find_module(spec.path))
    except (OSError, ValueError) as err:
        return f"unknown ({str(err).splitlines()[0][:80]})"
    return f"{meta.method} ({meta.init})"


def fraction_to_match(curve: dict[float, float], target: float) -> float | None:
    """The smallest fraction whose mean AUC reaches ``target`` (None if none does)."""
    for fraction in sorted(curve):
        if not math.isnan(curve[fraction]) and curve[fraction] >= target:
            return fraction
    return None


def _slug(module: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", module).strip("_")[-60:] or "module"


def label_efficiency(base: FinetuneConfig, modules: Sequence[str],
                     fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
                     seeds: Sequence[int] = (0, 1, 2), baseline: str | None = None,
                     ) -> LabelEfficiencyResult:
    """Fine-tunes every module at every label fraction and seed, as ``base`` says otherwise.

    ``baseline`` (default: the last module) sets the target: its mean test AUC with all labels
    (fraction 1.0 is added if missing). Writes ``results.json``, ``table.md`` and
    ``label_efficiency.png`` under ``base.out_dir``.
    """
    from medfound.finetune.trainer import finetune

    if not modules:
        raise ValueError("label_efficiency needs at least one module")
    baseline = baseline or modules[-1]
    if baseline not in modules:
        raise ValueError(f"baseline {baseline!r} is not among the modules {list(modules)}")
    fractions = sorted(set(float(f) for f in fractions) | {1.0})
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not seeds:
        raise ValueError(f"fractions must be in (0, 1] and seeds non-empty (got {bad}, {seeds})")
    out = Path(base.out_dir)
    for module, fraction, seed in [(m, f, s) for m in modules for f in fractions for s in seeds]:
        dataclasses.replace(base, module=module, label_fraction=fraction, seed=seed).validate()
    runs = []
    for module in modules:
        for fraction in fractions:
            for seed in seeds:
                run_dir = out / "runs" / _slug(module) / f"fraction{fraction:g}" / f"seed{seed}"
                metrics_file = run_dir / "metrics.json"
                if not metrics_file.is_file():  # finished runs are reused: the sweep resumes
                    finetune(dataclasses.replace(base, module=module, label_fraction=fraction,
                                                 seed=seed, out_dir=str(run_dir)))
                auc = json.loads(metrics_file.read_text())["test"]["mean_auc"]
                runs.append({"module": module, "fraction": fraction, "seed": seed,
                             "test_mean_auc": float("nan") if auc is None else float(auc),
                             "run_dir": str(run_dir)})
    summary: dict[str, dict[float, dict]] = {}
    for module in modules:
        summary[module] = {}
        for fraction in fractions:
            scores = np.array([r["test_mean_auc"] for r in runs
                               if r["module"] == module and r["fraction"] == fraction])
            summary[module][fraction] = {"mean": float(np.nanmean(scores)) if np.isfinite(scores).any()
                                         else float("nan"),
                                         "std": float(np.nanstd(scores)) if np.isfinite(scores).any()
                                         else float("nan"),
                                         "n": int(np.isfinite(scores).sum())}
    if not any(np.isfinite(r["test_mean_auc"]) for r in runs):
        from medfound.errors import UserError

        raise UserError(f"{base.data}: every run's test AUC is undefined (no class has both "
                        "labels in the test split), so label efficiency cannot be measured; "
                        f"the runs are kept in {out / 'runs'}")
    target = summary[baseline][1.0]["mean"]
    matched = {m: fraction_to_match({f: v["mean"] for f, v in summary[m].items()}, target)
               for m in modules}
    result = LabelEfficiencyResult(runs, summary, baseline, target, matched, out,
                                   {m: pretraining_of(m) for m in modules})
    _write(result, base)
    return result


def _write(result: LabelEfficiencyResult, base: FinetuneConfig) -> None:
    out = result.out_dir
    data = {"task": base.task, "data": base.data, "mode": base.mode, "baseline": result.baseline,
            "target_auc": result.target_auc, "fraction_to_match": result.fraction_to_match,
            "pretraining": result.pretraining,
            "summary": {m: {str(f): v for f, v in c.items()} for m, c in result.summary.items()},
            "runs": result.runs}
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=True))
    fractions = sorted(next(iter(result.summary.values())))
    lines = ["| module | pretraining | " + " | ".join(f"{f:.0%}" for f in fractions)
             + " | labels to match |", "|---" * (len(fractions) + 3) + "|"]
    for module, curve in result.summary.items():
        cells = [f"{curve[f]['mean']:.3f} ± {curve[f]['std']:.3f}" for f in fractions]
        need = result.fraction_to_match[module]
        lines.append(f"| {module} | {result.pretraining.get(module, '')} | " + " | ".join(cells) + f" | {'-' if need is None else f'{need:.0%}'} |")
    lines.append(f"\nTarget: {result.baseline} with 100% of labels, mean test AUC "
                 f"{result.target_auc:.3f}; 'labels to match' is the smallest fraction reaching it.")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(result, fractions, out / "label_efficiency.png")


def _plot(result: LabelEfficiencyResult, fractions: list[float], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for module, curve in result.summary.items():
        mean = np.array([curve[f]["mean"] for f in fractions])
        std = np.array([curve[f]["std"] for f in fractions])
        ax.errorbar(fractions, mean, yerr=std, marker="o", capsize=3,
                    label=f"{module} [{result.pretraining.get(module, '?')}]")
    ax.axhline(result.target_auc, color="grey", ls="--", label=f"{result.baseline} @ 100%")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training labels")
    ax.set_ylabel("test mean AUC")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
