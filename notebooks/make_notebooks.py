"""Regenerates the two notebooks from code (kept so cell edits are reviewable as Python).

Run from the repository root: python notebooks/make_notebooks.py
"""
from pathlib import Path

import nbformat as nbf
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

def params(src: str):
    """A code cell tagged 'parameters' (the papermill convention) holding a notebook's settings."""
    cell = new_code_cell(src)
    cell.metadata["tags"] = ["parameters"]
    return cell

common_setup = '''import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import medfound
from medfound.finetune.config import FinetuneConfig
from medfound.finetune.trainer import finetune

print("medfound", medfound.__version__)
Path(OUT).mkdir(parents=True, exist_ok=True)'''

curves = '''epochs = [h["epoch"] for h in result.history]
fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_loss.plot(epochs, [h["train_loss"] for h in result.history], "o-", label="train loss")
ax_loss.set_xlabel("epoch"); ax_loss.set_ylabel("loss"); ax_loss.legend()
val_auc = [h.get("val_mean_auc") for h in result.history]
ax_auc.plot(epochs, [np.nan if v is None else v for v in val_auc], "o-", label="validation mean AUC")
ax_auc.axvline(result.best_epoch, color="grey", ls="--", label="best epoch (kept)")
ax_auc.set_xlabel("epoch"); ax_auc.legend()
plt.show()'''

roc = '''test = result.metrics["test"]
print(f"test mean AUC: {test['mean_auc']} (95% CI {test.get('mean_auc_ci95')})")
for name, row in test["per_class"].items():
    print(f"  {name:<20} AUC {row['auc']}  positives {row['positives']}  negatives {row['negatives']}")
roc_png = Path(OUT) / "roc_test.png"
if roc_png.is_file():
    display(Image(filename=str(roc_png)))
else:
    print("no ROC curve: no class has both labels in this test split (use more data)")'''

# ---------------- CheXpert ----------------
nb = new_notebook()
nb.cells = [
 new_markdown_cell("""# Fine-tune a chest X-ray foundation model: CheXpert-style multi-label

This notebook fine-tunes a backbone (a REMEDIS hub module, a BiT checkpoint, or a random
initialisation as baseline) on chest X-ray findings, the way the REMEDIS paper evaluates the `cxr`
modules: the five CheXpert competition pathologies, multi-label, with a policy for uncertain labels.

* With a **CheXpert-v1.0-small** folder, set `TASK = "chexpert"` and `DATA_PATH` to it.
* By default it runs on small **real** data that ships beside the repository (`../shared/data`):
  the real CheXpert `train.csv` (labels only, to show the uncertainty policies at full scale) and
  1000 NIH ChestX-ray14 radiographs used CheXpert-style for the fine-tune. CI executes this notebook
  top to bottom with these defaults.
* For a real run use a module at its size, e.g. `MODULE = "path/to/cxr-50x1-remedis-m"`,
  `IMAGE_SIZE = 448`."""),
 params('''# Parameters: change these for your own data and module.
import os
DATA = os.environ.get("MEDFOUND_TEST_DATA", "../../shared/data")
TASK = "nih"                       # "chexpert" with a CheXpert-v1.0-small folder, "mimic", "nih"
DATA_PATH = f"{DATA}/nih-cxr14-sample"
CHEXPERT_CSV = f"{DATA}/chexpert/train.csv.gz"   # labels only, for the uncertainty-policy table
MODULE = "random:tiny"             # a hub module folder/.tar.gz, "bit:r50x1:BiT-M-R50x1.npz", "random:r50x1"
CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration"]  # None: the task's default
MODE = "linear"                    # "linear" (frozen backbone) or "full" (end to end)
IMAGE_SIZE = 64                    # 448 for the cxr modules
EPOCHS = 6
LABEL_FRACTION = 1.0
OUT = os.environ.get("MEDFOUND_NOTEBOOK_OUT", "runs") + "/finetune_chexpert"'''),
 new_code_cell(common_setup),
 new_markdown_cell("""## CheXpert labels and the uncertainty policy

CheXpert marks uncertain findings `-1.0`. `ones` counts them positive, `zeros` negative, `ignore`
masks them out of the loss. Counts on the real `train.csv` (223,414 studies):"""),
 new_code_cell('''from medfound.data.labeled.chexpert import load_chexpert

if Path(CHEXPERT_CSV).is_file():
    for policy in ("ones", "zeros", "ignore"):
        ds = load_chexpert(CHEXPERT_CSV, uncertainty=policy)
        positives = (ds.labels * ds.mask).sum(0).astype(int)
        used = ds.mask.sum(0).astype(int)
        print(f"{policy:>6}: " + ", ".join(f"{c} {p}/{u}" for c, p, u in zip(ds.class_names, positives, used)))
else:
    print(f"{CHEXPERT_CSV} not found: skipping the label table")'''),
 new_markdown_cell("## Sample images (patient-level splits are made by the loader)"),
 new_code_cell('''from medfound.data.labeled import load_task_splits

splits = load_task_splits(TASK, DATA_PATH, seed=0)
train = splits["train"]
batch = next(iter(train.tf_dataset(IMAGE_SIZE * 2, 8)))
fig, axes = plt.subplots(1, 8, figsize=(16, 2.6))
for ax, image, label in zip(axes, batch["image"].numpy(), batch["label"].numpy()):
    ax.imshow(image); ax.axis("off")
    found = [c for c, v in zip(train.class_names, label) if v > 0]
    ax.set_title("\\n".join(found[:2]) or "no finding", fontsize=8)
plt.show()
print({name: len(part.labels) for name, part in splits.items()}, "images;",
      {name: len(set(part.patient_ids)) for name, part in splits.items()}, "patients")'''),
 new_markdown_cell("## Fine-tune"),
 new_code_cell('''config = FinetuneConfig(module=MODULE, task=TASK, data=DATA_PATH, out_dir=OUT, mode=MODE,
                        classes=CLASSES, image_size=IMAGE_SIZE, epochs=EPOCHS,
                        label_fraction=LABEL_FRACTION, learning_rate=0.01, patience=3,
                        n_boot=200, verbose=False)
result = finetune(config)
print("best epoch", result.best_epoch, "| stopped early:", result.stopped_early)
print("written:", sorted(p.name for p in Path(OUT).iterdir()))'''),
 new_markdown_cell("## Training curves"),
 new_code_cell(curves),
 new_markdown_cell("## Test metrics and ROC curves (bootstrap 95% intervals, resampled by patient)"),
 new_code_cell(roc),
 new_markdown_cell("""## Next

* Out-of-distribution and shift robustness: `medfound evaluate --model OUT --task ... --shift contrast`.
* Label efficiency: rerun with `LABEL_FRACTION` 0.01 ... 1.0 (subsets are nested and patient-level)."""),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, str(HERE / "finetune_chexpert.ipynb"))

# ---------------- Camelyon ----------------
nb = new_notebook()
nb.cells = [
 new_markdown_cell("""# Fine-tune a pathology foundation model: Camelyon-style binary tumour detection

Fine-tunes a backbone on tumour vs normal tissue patches, as the REMEDIS paper evaluates the
`path` modules on Camelyon / PatchCamelyon.

* With the original PatchCamelyon files (`camelyonpatch_level_2_split_*_{x,y}.h5`), set
  `TASK = "camelyon"` and `DATA_PATH` to their folder; they are streamed, not loaded whole.
* By default it runs on 12 **real** BreakHis breast-histology images (`../shared/data/breakhis`),
  tiled into patches, benign vs malignant, with patient-level splits from the file names. CI runs
  this notebook top to bottom with these defaults; 12 images (9 patients) are far too few for
  meaningful numbers, so the point here is the code path.
* For a real run: `MODULE = "path/to/path-50x1-remedis-m"`, `IMAGE_SIZE = 224`."""),
 params('''# Parameters: change these for your own data and module.
import os
DATA = os.environ.get("MEDFOUND_TEST_DATA", "../../shared/data")
TASK = "breakhis"                  # "camelyon" with PatchCamelyon .h5 files or patch folders
DATA_PATH = f"{DATA}/breakhis"
MODULE = "random:tiny"             # a hub module folder/.tar.gz, "bit:r50x1:BiT-M-R50x1.npz", "random:r50x1"
MODE = "full"                      # "linear" (frozen backbone) or "full" (end to end)
IMAGE_SIZE = 64                    # 224 for the path modules (PCam patches are 96 px)
EPOCHS = 2
STEPS_PER_EPOCH = 3
OUT = os.environ.get("MEDFOUND_NOTEBOOK_OUT", "runs") + "/finetune_camelyon"
# Whole slides (the last section): Camelyon16 .tif slides and their ASAP .xml annotations.
SLIDES = None                      # a folder (or CSV) of slides; None: 8 + 8 generated test slides
ANNOTATIONS = None                 # a folder of <slide>.xml; None: those of the generated slides
SLIDE_MODULE = None                # e.g. "path/to/path-50x1-remedis-m"; None: a random tiny module
SLIDE_MPP = 1.0                    # tile resolution in um/px: 0.5 (20x) for real slides
TILE_SIZE = 32                     # 224 for the path modules
SLIDE_EPOCHS = 20'''),
 new_code_cell(common_setup),
 new_markdown_cell("## Tiles and labels"),
 new_code_cell('''from medfound.data.labeled import load_task_splits

splits = load_task_splits(TASK, DATA_PATH, seed=0)
train = splits["train"]
batch = next(iter(train.tf_dataset(IMAGE_SIZE * 2, 8, shuffle=True, seed=1)))
fig, axes = plt.subplots(1, 8, figsize=(16, 2.4))
for ax, image, label in zip(axes, batch["image"].numpy(), batch["label"].numpy()):
    ax.imshow(image); ax.axis("off"); ax.set_title("malignant" if label[0] > 0 else "benign", fontsize=9)
plt.show()
print({name: len(part.labels) for name, part in splits.items()}, "tiles;",
      {name: sorted(set(part.patient_ids)) for name, part in splits.items()})'''),
 new_markdown_cell("## Fine-tune"),
 new_code_cell('''config = FinetuneConfig(module=MODULE, task=TASK, data=DATA_PATH, out_dir=OUT, mode=MODE,
                        image_size=IMAGE_SIZE, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                        optimizer="adamw", learning_rate=1e-3, batch_size=16, n_boot=200,
                        verbose=False)
result = finetune(config)
print("best epoch", result.best_epoch, "| written:", sorted(p.name for p in Path(OUT).iterdir()))'''),
 new_markdown_cell("## Training curves"),
 new_code_cell(curves),
 new_markdown_cell("## Test metrics (binary: sensitivity and specificity at the threshold too)"),
 new_code_cell(roc + '''
print("accuracy", test.get("accuracy"), "| sensitivity / specificity:",
      test.get("sensitivity"), test.get("specificity"))'''),
 new_markdown_cell("""## Whole-slide images: slides -> tile embeddings -> slide classifier -> heatmap

Camelyon16 is distributed as whole slides (pyramidal TIFFs, ~100k x 200k px at 0.24 um/px) with
slide labels (`tumor_*` / `normal_*`) and ASAP XML tumour outlines. The path below is the one
`medfound embed --slides` and `medfound finetune --task camelyon16-slides` run:

1. find the tissue on a low-resolution level (glass is never embedded), tile it at `SLIDE_MPP`,
   embed every tile with the module: one HDF5 per slide (`coords`, `features`, attributes; the
   CLAM / TRIDENT layout), resumable, a bad slide reported and skipped;
2. train slide classifiers on the bags of tile features: mean pooling (baseline) and attention
   MIL, split by patient; test AUC with a bootstrap 95 % interval;
3. paint the attention (or the tile tumour probability) over each test slide's thumbnail.

Set `SLIDES`, `ANNOTATIONS` and `SLIDE_MODULE` for real slides. By default the section generates
16 small slides in the Camelyon layout from the real BreakHis images (tumour slides: mosaics of
malignant crops, normal slides: benign crops, so the answer is known) and embeds them with a
randomly initialised tiny module: a check of the code path that CI runs, not a result."""),
 new_code_cell('''from medfound.slides import detect_tissue, open_slide
from medfound.slides.synthetic import write_mosaic_set, write_random_module

if SLIDES:
    slides_dir, annotations = SLIDES, ANNOTATIONS
else:
    slides_dir = str(write_mosaic_set(Path(OUT) / "slides", f"{DATA}/breakhis", 8, 8))
    annotations = slides_dir
slide_module = SLIDE_MODULE or str(write_random_module(Path(OUT) / "slide_module",
                                                       image_size=TILE_SIZE))
first = sorted(Path(slides_dir).glob("*.tif"))[0] if Path(slides_dir).is_dir() else None
if first is not None:
    with open_slide(first) as slide:
        print(first.name, "| levels", slide.level_dimensions, "| mpp", round(slide.mpp, 3))
        thumb, tissue = slide.thumbnail(512), detect_tissue(slide)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_t.imshow(thumb); ax_t.set_title(first.name); ax_t.axis("off")
    ax_m.imshow(tissue.mask, cmap="gray"); ax_m.axis("off")
    ax_m.set_title(f"tissue mask (level {tissue.level}, {tissue.fraction:.0%} tissue)")
    plt.show()'''),
 new_markdown_cell("""A real whole slide through the same reader, tissue detector and tiling: the OpenSlide
test slide `CMU-1-Small-Region.svs` (Aperio SVS, H&E skin, 0.499 um/px, CC0) when the data
folder has it. One slide cannot train a classifier, so the classifier below uses the generated
slides; the embedding command is the same for real slides (`medfound embed --slides`)."""),
 new_code_cell('''from medfound.slides.tiling import TilingConfig, plan_tiles

real = Path(DATA) / "wsi" / "CMU-1-Small-Region.svs"
real_tiles = {}
if real.is_file():
    with open_slide(real) as slide:
        real_tissue = detect_tissue(slide)
        for mpp in (0.5, 1.0):
            real_tiles[mpp] = len(plan_tiles(slide, real_tissue, TilingConfig(mpp=mpp)).coords)
        print(real.name, "| levels", slide.level_dimensions, "| mpp", round(slide.mpp, 3),
              f"| {real_tissue.fraction:.0%} tissue | 224-px tiles:", real_tiles)
        plt.imshow(slide.thumbnail(512)); plt.axis("off"); plt.title(real.name); plt.show()
else:
    print("no real slide at", real, "(the data folder's wsi/); skipped")'''),
 new_code_cell('''from medfound.slides.embed import SlideEmbedConfig, embed_slides
from medfound.slides.tiling import TilingConfig

features_dir = Path(OUT) / "slide_features"
embedded = embed_slides(SlideEmbedConfig(
    module=slide_module, input=slides_dir, out_dir=str(features_dir), image_size=TILE_SIZE,
    tiling=TilingConfig(mpp=SLIDE_MPP, tile_size=TILE_SIZE, min_tissue=0.5),
    annotations=annotations, progress=False))
print(embedded.summary())
print("the same from a shell: medfound embed --slides --module", slide_module, "--input", slides_dir,
      "--out", features_dir, "--mpp", SLIDE_MPP, "--tile-size", TILE_SIZE,
      *(["--annotations", annotations] if annotations else []))'''),
 new_code_cell('''from medfound.slides.mil import SlideTaskConfig, run_slide_task

slide_out = Path(OUT) / "slide_classifier"
slide_metrics = run_slide_task(SlideTaskConfig(
    data=str(features_dir), out_dir=str(slide_out), epochs=SLIDE_EPOCHS, val_fraction=0.1,
    test_fraction=0.4, n_boot=200, verbose=False))
print("slides per split:", slide_metrics["splits"], "(whole patients per split)")
for kind, m in slide_metrics["models"].items():
    low, high = m["auc_ci95"]
    print(f"{kind:>9}: test AUC {m['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) on {m['n']} slides")
print("the same from a shell: medfound finetune --task camelyon16-slides --data", features_dir,
      "--out", slide_out)'''),
 new_code_cell('''heatmaps = sorted((slide_out / "heatmaps").glob("*.png"))
tumour_maps = [h for h in heatmaps if h.name.startswith("tumor")] or heatmaps
for png in tumour_maps[:2]:  # a tumour test slide: attention, then tile tumour probability
    display(Image(filename=str(png)))'''),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, str(HERE / "finetune_camelyon.ipynb"))
