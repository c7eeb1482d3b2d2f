"""Unlabeled medical image sources, image decoding and preparation, TFRecord shards and MICLe positive pairs.

TensorFlow is imported only when a dataset is built, so importing this package stays light.
"""
from medfound.data.images import (DEFAULT_MAX_PIXELS, ImageError, SkippedFiles, image_dataset,
                                  list_image_files, make_decoder, read_image)
from medfound.data.micle import micle_pairs, patient_groups
from medfound.data.prepare import prepare_image, to_rgb_float
from medfound.data.tfrecords import parse_example, write_tfrecords
from medfound.data.unlabeled import SourceError, UnlabeledSource, open_unlabeled

__all__ = [
    "DEFAULT_MAX_PIXELS", "ImageError", "SkippedFiles", "SourceError", "UnlabeledSource",
    "image_dataset", "list_image_files", "make_decoder", "micle_pairs", "open_unlabeled",
    "parse_example", "patient_groups", "prepare_image", "read_image", "to_rgb_float", "write_tfrecords",
]
