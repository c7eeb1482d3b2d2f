"""Installable package for medfound: REMEDIS-style medical imaging foundation models."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version: dict = {}
exec((ROOT / "medfound" / "version.py").read_text(), version)

setup(
    name="medfound",
    version=version["__version__"],
    description=(
        "Build, publish and use REMEDIS-style medical imaging foundation models "
        "(BiT ResNetV2 + contrastive self-supervision) with TensorFlow 2 / Keras 3."
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["medfound", "medfound.*"]),
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.0,<4",
        "tensorflow-hub>=0.16,<0.17",
        # tensorflow-hub 0.16 imports pkg_resources when it is imported; setuptools' deprecation
        # notice says to pin < 81 to keep it (84 has none), and torch 2.13 (the bench extra) asks
        # for setuptools >= 77, which alone takes the newest.
        "setuptools<81",
        # TensorFlow 2.21 no longer installs it; tf.summary needs it for run logs.
        "tensorboard>=2.16,<2.22",
        "tensorflow-datasets>=4.9,<5",
        # TFDS 4.9 needs it to prepare its own builders (chexpert, patch_camelyon) but declares it
        # only for Python < 3.9 (tensorflow/datasets#11212).
        "importlib_resources>=5,<7",
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        "h5py>=3.10,<4",
        "matplotlib>=3.8,<4",
        # `medfound embed --out X.parquet`; tensorflow-datasets installs it anyway.
        "pyarrow>=14",
        # Whole-slide images (medfound.slides): a pure-Python OpenSlide-compatible reader of
        # pyramidal TIFF / SVS (tifffile + zarr + imagecodecs wheels, no system library).
        "tiffslide>=2.4,<4",
        # `export --format timm` writes model.safetensors with NumPy alone (no PyTorch needed).
        "safetensors>=0.4,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",  # the suite runs on both CI cores (-n 2 in pytest.ini)
            "hypothesis>=6.100,<7",
            # Only to prove that old tf-keras users can still use hub.KerasLayer.
            "tf-keras>=2.16,<2.22",
            "tifffile>=2023.7",  # writes the pyramidal test slides (medfound/slides/synthetic.py)
        ],
        "onnx": ["tf2onnx>=1.16,<2", "onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
        "dicom": ["pydicom>=2.4,<4"],
        # Kept so that `pip install medfound[parquet]` still works; pyarrow is now a base dependency.
        "parquet": [],
        # The same weights on other Keras 3 backends and in PyTorch (issue 23). Extras only: the
        # runtime install stays TensorFlow; CI installs them all so nothing is skipped.
        "torch": ["torch>=2.2"],
        "jax": ["jax>=0.4.30"],
        "timm": ["timm>=1.0.9", "torch>=2.2"],
        # The tools encoders are benchmarked with, tested against medfound's embeddings.
        "tools": ["kaiko-eva[vision]>=0.4,<0.5"],
        # Benchmark-only baselines (bench/alternatives.py): timm's BiT in PyTorch.
        "bench": ["torch>=2.2", "timm>=1.0", "lightly>=1.5,<2"],
        # `medfound embed --engine beam` (medfound.beam): Apache Beam's runners (Direct, Dataflow,
        # Flink, Spark). It resolves beside TensorFlow 2.21 (protobuf 6.x).
        "beam": ["apache-beam>=2.77,<3"],
        "notebooks": ["nbformat>=5.9,<6", "nbclient>=0.10,<1", "ipykernel>=6.29,<8"],
    },
    entry_points={"console_scripts": ["medfound=medfound.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
