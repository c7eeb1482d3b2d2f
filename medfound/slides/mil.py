"""Slide-level learning on per-slide tile embeddings: mean pooling and attention MIL, in Keras 3.

``camelyon16-slides``: one bag of tile features per slide (the files ``medfound embed --slides``
writes), slide labels from a CSV (``slide,label[,patient][,split]``) or, as in Camelyon16, from the
names (``tumor_*`` / ``normal_*``). Two classifiers are trained: mean pooling + logistic
regression (the baseline) and gated attention MIL (Ilse et al., ICML 2018, as in CLAM). Splits are
by patient (Camelyon17 ``patient_XXX_node_Y`` names share a patient), stratified, deterministic
under the seed, unless the CSV has a ``split`` column. Test AUC has a patient-level bootstrap 95 %
interval; a heatmap PNG per test slide shows the attention (or the tile tumour probability) over
the thumbnail.

``camelyon16-tiles``: the same files and splits, tile labels from the annotations' tumour
fractions (``tumor_fraction``, written when embedding with ``--annotations``), a logistic head on
the tile features, tile AUC with a slide-level bootstrap interval.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from medfound.slides.annotations import tile_labels
from medfound.slides.bags import SlideBag, _label_rows, load_bags  # noqa: F401 (re-exported)
from medfound.slides.reader import SlideError

SLIDE_TASKS = ("camelyon16-slides", "camelyon16-tiles")
SLIDE_MODELS = ("mean", "attention")  # mean pooling + logistic regression; gated attention MIL


@dataclasses.dataclass
class SlideTaskConfig:
    """A slide-level (or tile-level) training run on per-slide embedding files."""

    data: str  # folder of <slide>.h5 files
    out_dir: str
    task: str = "camelyon16-slides"
    labels: str | None = None  # CSV slide,label[,patient][,split]; default: <data>/labels.csv or names
    models: tuple[str, ...] = ("mean", "attention")
    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    tile_threshold: float = 0.5  # tile label: tumour fraction >= this
    batch_size: int = 256  # tiles per step (tile task)
    n_boot: int = 1000
    seed: int = 0
    verbose: bool = True

    def validate(self) -> None:
        """Refuses, in one line naming each flag, a task, classifier or number that makes no
        sense (numbers: medfound.slides.limits), before anything is read or written."""
        from medfound.slides.limits import problems

        found = [] if self.task in SLIDE_TASKS else [
            f"--task {self.task!r}: expected one of {', '.join(SLIDE_TASKS)}"]
        unknown = [m for m in self.models if m not in SLIDE_MODELS]
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            found.append(f"--slide-models {','.join(self.models)!r}: give one or both of "
                         f"{', '.join(SLIDE_MODELS)}, each once")
        found += problems({name: getattr(self, name) for name in (
            "epochs", "learning_rate", "weight_decay", "hidden", "val_fraction",
            "test_fraction", "tile_threshold", "batch_size", "n_boot")})
        if self.labels is not None and not str(self.labels).strip():
            found.append("--labels is empty; give the labels CSV")
        if self.val_fraction + self.test_fraction >= 1:
            found.append(f"val_fraction {self.val_fraction} + test_fraction "
                         f"{self.test_fraction} leave no training slides")
        if found:
            raise SlideError("; ".join(found))


def split_patients(bags: list[SlideBag], val_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, str]:
    """Slide name -> 'train' / 'val' / 'test', whole patients per split, stratified by label."""
    rng = np.random.default_rng(seed)
    patient_label: dict[str, int] = {}
    for b in bags:
        patient_label[b.patient] = max(patient_label.get(b.patient, 0), b.label)
    split_of: dict[str, str] = {}
    for label in (0, 1):
        patients = sorted(p for p, y in patient_label.items() if y == label)
        rng.shuffle(patients)
        n = len(patients)
        n_test = max(1, int(round(n * test_fraction))) if n >= 2 else 0
        n_val = max(1, int(round(n * val_fraction))) if n - n_test >= 2 and val_fraction else 0
        for i, p in enumerate(patients):
            split_of[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return {b.name: split_of[b.patient] for b in bags}


# ---- models --------------------------------------------------------------------------------------

def _keras():
    import keras

    return keras


def build_mean_pool(dim: int):
    """Mean of the tile features -> logistic regression (the baseline)."""
    keras = _keras()
    bag = keras.Input((None, dim), name="features")
    pooled = keras.layers.GlobalAveragePooling1D()(bag)
    logit = keras.layers.Dense(1, name="classifier")(pooled)
    return keras.Model(bag, {"logit": logit}, name="mean_pool_mil")


def _attention_layer_class():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="medfound")
    class GatedAttentionPooling(keras.layers.Layer):
        """Gated attention pooling (Ilse et al. 2018): weights over the tiles, and their
        weighted mean."""

        def __init__(self, units: int = 64, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.v = keras.layers.Dense(units, activation="tanh")
            self.u = keras.layers.Dense(units, activation="sigmoid")
            self.w = keras.layers.Dense(1)

        def build(self, input_shape):
            # Sublayers built here, so that a loaded model gets their saved weights.
            self.v.build(input_shape)
            self.u.build(input_shape)
            self.w.build(tuple(input_shape[:-1]) + (self.units,))

        def call(self, h):
            scores = self.w(self.v(h) * self.u(h))[..., 0]  # (B, N)
            weights = keras.ops.softmax(scores, axis=-1)
            pooled = keras.ops.sum(h * weights[..., None], axis=1)
            return pooled, weights

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    return GatedAttentionPooling


def build_attention_mil(dim: int, hidden: int = 128, dropout: float = 0.25):
    """Tile features -> Dense -> gated attention pooling -> logistic; also returns the weights."""
    keras = _keras()
    bag = keras.Input((None, dim), name="features")
    h = keras.layers.Dense(hidden, activation="relu", name="embed")(bag)
    h = keras.layers.Dropout(dropout)(h)
    pooled, weights = _attention_layer_class()(max(hidden // 2, 8), name="attention")(h)
    logit = keras.layers.Dense(1, name="classifier")(pooled)
    return keras.Model(bag, {"logit": logit, "attention": weights}, name="attention_mil")


def _standardise(bags, train_names):
    train = np.concatenate([b.features for b in bags if b.name in train_names])
    mean, std = train.mean(0), train.std(0) + 1e-6
    return lambda x: (x - mean) / std


def _train_bag_model(model, bags, split, norm, config: SlideTaskConfig, log):
    import tensorflow as tf

    keras = _keras()
    opt = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True, input_signature=[
        tf.TensorSpec([1, None, None], tf.float32), tf.TensorSpec([1, 1], tf.float32)])
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)["logit"])
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    train = [b for b in bags if split[b.name] == "train"]
    val = [b for b in bags if split[b.name] == "val"]
    rng = np.random.default_rng(config.seed)
    best, best_weights = -np.inf, None
    for epoch in range(config.epochs):
        losses = []
        for i in rng.permutation(len(train)):
            b = train[i]
            losses.append(float(step(norm(b.features)[None], np.array([[b.label]], np.float32))))
        # Selection on the validation loss: with a handful of validation slides the AUC
        # saturates early (ties at 1.0 after a few epochs) and would keep an undertrained model.
        val_loss = _val_loss(model, val, norm)
        key = -(val_loss if val_loss is not None else np.mean(losses))
        if key >= best:
            best, best_weights = key, [w.copy() for w in model.get_weights()]
        if log:
            score = _val_auc(model, val, norm)
            log(f"  {model.name} epoch {epoch + 1}: loss {np.mean(losses):.4f}"
                + (f", val loss {val_loss:.4f}" if val_loss is not None else "")
                + (f", val AUC {score:.3f}" if score is not None else ""))
    model.set_weights(best_weights)
    return model


def _predict_bag(model, bag: SlideBag, norm):
    out = model(norm(bag.features)[None], training=False)
    return float(_sigmoid(np.asarray(out["logit"])[0, 0])), out


def _sigmoid(x) -> np.ndarray:
    """The logistic function, without overflow for large logits."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, np.float64)))


def _val_loss(model, val, norm) -> float | None:
    """Mean binary cross-entropy of the validation slides (None without any)."""
    if not val:
        return None
    p = np.clip([_predict_bag(model, b, norm)[0] for b in val], 1e-7, 1 - 1e-7)
    y = np.array([b.label for b in val], np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _val_auc(model, val, norm):
    from medfound.evaluation.metrics import roc_auc

    labels = [b.label for b in val]
    if len(set(labels)) < 2:
        return None
    return roc_auc(np.array(labels), np.array([_predict_bag(model, b, norm)[0] for b in val]))


def tile_scores(model, bag: SlideBag, norm) -> np.ndarray:
    """What the heatmap shows per tile: attention weights, or the classifier applied per tile."""
    _, out = _predict_bag(model, bag, norm)
    if "attention" in out:
        return np.asarray(out["attention"])[0]
    w, b = model.get_layer("classifier").get_weights()
    return _sigmoid(norm(bag.features) @ w[:, 0] + b[0])


def heatmap_png(bag: SlideBag, scores: np.ndarray, out: Path, *, title: str = "",
                normalise: bool = True) -> Path:
    """Tile scores painted over the slide thumbnail, as a PNG; ``normalise`` stretches them to
    [0, 1] (attention weights), else they are drawn as they are (probabilities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfound.utils.files import atomic_path

    width, height = int(bag.attrs["slide_width"]), int(bag.attrs["slide_height"])
    thumb = None
    slide_path = Path(str(bag.attrs.get("slide", "")))
    if slide_path.is_file():
        from medfound.slides.reader import open_slide

        with open_slide(slide_path, base_mpp=float(bag.attrs["base_mpp"])) as slide:
            thumb = slide.thumbnail(1024)
    scale = (thumb.shape[1] / width) if thumb is not None else 1024 / max(width, height)
    hw = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    heat = np.full(hw, np.nan, np.float32)
    s = np.asarray(scores, np.float32)
    if normalise and len(s):
        s = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.full_like(s, 0.5)
    side = max(1, int(round(float(bag.attrs["patch_size_level0"]) * scale)))
    for (x, y), v in zip(bag.coords, s):
        x0, y0 = int(x * scale), int(y * scale)
        heat[y0:y0 + side, x0:x0 + side] = np.fmax(heat[y0:y0 + side, x0:x0 + side], v)
    fig, ax = plt.subplots(figsize=(6, 6 * hw[0] / hw[1] + 0.4), dpi=100)
    if thumb is not None:
        ax.imshow(thumb, extent=(0, hw[1], hw[0], 0))
    image = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(0, hw[1], hw[0], 0))
    fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_title(title or bag.name, fontsize=9)
    ax.axis("off")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return out


def _report(labels, scores, groups, n_boot, seed) -> dict:
    from medfound.evaluation.metrics import bootstrap_auc, roc_auc

    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    if len(set(labels.tolist())) < 2:
        return {"auc": None, "auc_ci95": [None, None], "n": int(len(labels))}
    boot = bootstrap_auc(labels[:, None], scores[:, None], n_boot=n_boot, seed=seed,
                         groups=np.asarray(groups))
    ci = [boot["mean_low"], boot["mean_high"]]
    return {"auc": float(roc_auc(labels, scores)),
            "auc_ci95": [None if v is None or np.isnan(v) else float(v) for v in ci],
            "n": int(len(labels)), "positives": int(labels.sum()), "n_boot": n_boot}


def run_slide_task(config: SlideTaskConfig) -> dict:
    """Trains and evaluates ``config.task``; writes metrics.json, predictions.csv, models and
    heatmaps/ into ``config.out_dir``; returns the metrics."""
    config.validate()
    import keras

    keras.utils.set_random_seed(config.seed)
    out = Path(config.out_dir)
    log = print if config.verbose else None
    bags, given = load_bags(config.data, config.labels)
    split = given or split_patients(bags, config.val_fraction, config.test_fraction, config.seed)
    counts = {s: sum(1 for b in bags if split[b.name] == s) for s in ("train", "val", "test")}
    if not counts["train"] or not counts["test"]:
        raise SlideError(f"{config.data}: {len(bags)} slides give splits {counts}; need train "
                         "and test slides")
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to make sense
    norm = _standardise(bags, {b.name for b in bags if split[b.name] == "train"})
    if config.task == "camelyon16-tiles":
        metrics = _run_tiles(bags, split, norm, config, out, log)
    else:
        metrics = _run_slides(bags, split, norm, config, out, log)
    metrics.update({"task": config.task, "data": str(config.data), "splits": counts,
                    "split_by": "given" if given else "patient", "seed": config.seed,
                    "module": str(bags[0].attrs.get("module")),
                    "module_sha256": str(bags[0].attrs.get("module_sha256")),
                    "mpp": float(bags[0].attrs["mpp"]),
                    "tile_size": int(bags[0].attrs["tile_size"])})
    from medfound.utils.files import atomic_path

    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return metrics


def _run_slides(bags, split, norm, config, out, log) -> dict:
    from medfound.utils.files import atomic_path

    dim = bags[0].features.shape[1]
    test = [b for b in bags if split[b.name] == "test"]
    metrics, rows = {"models": {}}, []
    for kind in config.models:
        # Each classifier starts from the seed, so its result does not depend on the others.
        _keras().utils.set_random_seed(config.seed)
        model = build_mean_pool(dim) if kind == "mean" else build_attention_mil(dim, config.hidden)
        model = _train_bag_model(model, bags, split, norm, config, log)
        with atomic_path(out / f"model_{kind}.keras") as tmp:
            model.save(str(tmp))
        scores = [_predict_bag(model, b, norm)[0] for b in test]
        metrics["models"][kind] = _report([b.label for b in test], scores,
                                          [b.patient for b in test], config.n_boot, config.seed)
        rows += [(kind, b.name, b.patient, b.label, s) for b, s in zip(test, scores)]
        for b in test:
            what = "attention" if kind == "attention" else "tile tumour probability"
            heatmap_png(b, tile_scores(model, b, norm), out / "heatmaps" / f"{b.name}.{kind}.png",
                        title=f"{b.name} ({'tumor' if b.label else 'normal'}): {what}",
                        normalise=kind == "attention")
    primary = "attention" if "attention" in metrics["models"] else config.models[0]
    metrics["test"] = {"primary": primary, **metrics["models"][primary]}
    _write_predictions(out, rows)
    return metrics


def _write_predictions(out: Path, rows: list[tuple]) -> None:
    """predictions.csv: one row per test slide (or tile, as SLIDE#INDEX) and model."""
    from medfound.utils.files import atomic_path

    with atomic_path(out / "predictions.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "slide", "patient", "label", "probability"])
            w.writerows(rows)


def _run_tiles(bags, split, norm, config, out, log) -> dict:
    import tensorflow as tf

    keras = _keras()
    from medfound.utils.files import atomic_path

    missing = [b.name for b in bags if b.tumor_fraction is None]
    if missing:
        raise SlideError(f"{config.data}: no tumor_fraction in {', '.join(missing[:5])}; embed "
                         "with --annotations DIR (ASAP XML per slide)")

    def arrays(which):
        chosen = [b for b in bags if split[b.name] in which]
        if not chosen:
            return np.zeros((0, bags[0].features.shape[1]), np.float32), np.zeros(0), []
        x = np.concatenate([norm(b.features) for b in chosen]).astype(np.float32)
        y = np.concatenate([tile_labels(b.tumor_fraction, config.tile_threshold) for b in chosen])
        g = sum(([b.name] * len(b.features) for b in chosen), [])
        return x, y.astype(np.float32), g

    x_train, y_train, _ = arrays(("train", "val"))
    if len(np.unique(y_train)) < 2:
        raise SlideError(f"{config.data}: every training tile is "
                         f"{'tumour' if len(y_train) and y_train[0] else 'not tumour'} at "
                         f"--tile-threshold {config.tile_threshold}; a tile classifier needs both")
    x_test, y_test, g_test = arrays(("test",))
    model = keras.Sequential([keras.Input((x_train.shape[1],)), keras.layers.Dense(1, name="classifier")],
                             name="tile_classifier")
    model.compile(keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x_train, y_train[:, None])).shuffle(
        len(x_train), seed=config.seed).batch(config.batch_size)
    model.fit(ds, epochs=config.epochs, verbose=0, shuffle=False)  # ds is shuffled
    with atomic_path(out / "model_tiles.keras") as tmp:
        model.save(str(tmp))
    scores = (_sigmoid(model.predict(x_test, verbose=0)[:, 0]) if len(x_test)
              else np.zeros(0))
    report = _report(y_test, scores, g_test, config.n_boot, config.seed)
    report["tile_threshold"] = config.tile_threshold
    start, rows = 0, []
    for b in bags:
        if split[b.name] != "test":
            continue
        s = np.asarray(scores[start:start + len(b.features)])
        rows += [("tiles", f"{b.name}#{i}", b.patient, int(y), float(p)) for i, (y, p) in
                 enumerate(zip(y_test[start:start + len(b.features)], s))]
        start += len(b.features)
        heatmap_png(b, s, out / "heatmaps" / f"{b.name}.tiles.png",
                    title=f"{b.name}: tile tumour probability", normalise=False)
    _write_predictions(out, rows)
    if log:
        log(f"  tile AUC {report['auc']}")
    return {"test": report}
