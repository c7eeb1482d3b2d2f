"""Decoding of single medical images into 3-channel float32 arrays in [0, 1], and a streaming tf.data decoder.

Conventions (the same in the Python and the TensorFlow paths):
- Grayscale (L, I;16, I, F, 1-bit) is replicated to 3 channels; palette images are expanded to RGB;
  CMYK and YCbCr are converted to RGB.
- Alpha is DROPPED, not composited (RGBA -> RGB, LA -> L): medical images store their intensities in
  the colour channels and an alpha channel is almost always a fully opaque artefact of the writer.
- 8-bit data is divided by 255, 16-bit data by 65535. Mode "I" (32-bit int) is treated as 16-bit when
  its values lie in [0, 65535], otherwise min-max scaled; mode "F" is kept when in [0, 1], otherwise
  min-max scaled.
- Multi-page TIFFs give their first page.
- Images with a side shorter than ``MIN_SIDE`` (2) pixels are refused, and so are images with more
  than ``max_pixels`` pixels (decompression-bomb limit, ``DEFAULT_MAX_PIXELS``), before decoding.
- DICOM (needs ``pip install medfound[dicom]``): the modality LUT (rescale slope/intercept) is applied,
  then the stored window (WindowCenter/WindowWidth) when present, else per-image min-max scaling;
  MONOCHROME1 is inverted so that bright always means dense. Multi-frame DICOMs are refused.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger("medfound.data")

MIN_SIDE = 2
DEFAULT_MAX_PIXELS = 1 << 27  # about 134 million pixels (11585 x 11585); a 3000 x 3000 radiograph is 9M
# The decode budget (issue 25): PNG / JPEG images up to LARGE_PIXELS decode in parallel, at most
# DECODE_BUDGET_PIXELS of them in flight together; larger ones (up to max_pixels) decode one at
# a time, in a second, sequential map (where map_decode's ``transform``, e.g. the resize, runs
# too, so a large image never leaves the call that decoded it). A pipeline then holds about
# DECODE_BUDGET_PIXELS + max_pixels decoded pixels, not its parallelism times max_pixels.
LARGE_PIXELS = 1 << 23  # about 8.4 million pixels (2896 x 2896)
DECODE_BUDGET_PIXELS = 1 << 27
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
DICOM_EXTENSIONS = (".dcm", ".dicom")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp") + DICOM_EXTENSIONS


class ImageError(ValueError):
    """A file that cannot be read as an image; the message is always ``"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if the file has a DICOM extension or the ``DICM`` magic at byte 128."""
    if str(path).lower().endswith(DICOM_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads one image file (PNG, JPEG, TIFF, BMP, ... or DICOM) as float32 (H, W, 3) in [0, 1].

    Raises ImageError naming the file and the problem for empty, truncated, unreadable, too small
    (side < 2 px) or too large (more than ``max_pixels``) images.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)")
    if is_dicom_file(path):
        return _read_dicom(path, max_pixels)
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(PNG_SIGNATURE) and len(head) >= 26 and head[24] == 16 and head[25] in (2, 6):
        return _read_png16_color(path, max_pixels)
    return _read_with_pil(path, head, max_pixels)


def _check_size(path: str, width: int, height: int, max_pixels: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(path, f"image is {width}x{height} pixels; at least {MIN_SIDE} pixels per "
                               "side are needed")
    if width * height > max_pixels:
        raise ImageError(path, f"image is {width}x{height} = {width * height:,} pixels, over the "
                               f"limit of {max_pixels:,} (possible decompression bomb; raise "
                               "max_pixels if the image is genuine)")


def _read_with_pil(path: str, head: bytes, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            try:
                Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before decoding
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except UnidentifiedImageError:
        raise ImageError(path, f"not a recognised image format (file starts with {head[:8]!r})"
                         ) from None
    except OSError as exc:
        raise ImageError(path, f"cannot open image: truncated or corrupt header ({exc})") from None
    with image:
        width, height = image.size
        _check_size(path, width, height, max_pixels)
        try:
            image.seek(0)
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(path, f"truncated or corrupt image data ({exc})") from None
        return pil_to_array(image, path)


def pil_to_array(image: Image.Image, path: str = "<image>") -> np.ndarray:
    """Converts a loaded PIL image of any mode to float32 (H, W, 3) in [0, 1] (alpha dropped)."""
    mode = image.mode
    if mode in ("RGBA", "RGBX", "RGBa"):
        array = np.asarray(image)[..., :3].astype(np.float32) / 255.0
    elif mode == "RGB":
        array = np.asarray(image).astype(np.float32) / 255.0
    elif mode in ("L", "LA", "La"):
        array = np.asarray(image.getchannel(0)).astype(np.float32) / 255.0
    elif mode == "1":
        array = np.asarray(image.convert("L")).astype(np.float32) / 255.0
    elif mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float32) / 65535.0
    elif mode == "I":
        raw = np.asarray(image).astype(np.int64)
        if raw.min() >= 0 and raw.max() <= 65535:
            array = raw.astype(np.float32) / 65535.0
        else:
            array = _min_max(raw.astype(np.float64), path)
    elif mode == "F":
        raw = np.asarray(image).astype(np.float64)
        if not np.all(np.isfinite(raw)):
            raise ImageError(path, "floating-point image contains NaN or infinity")
        array = raw.astype(np.float32) if raw.min() >= 0 and raw.max() <= 1 else _min_max(raw, path)
    else:  # P, PA, CMYK, YCbCr, LAB, HSV, ...
        try:
            array = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
        except (ValueError, OSError) as exc:
            raise ImageError(path, f"cannot convert image mode {mode!r} to RGB ({exc})") from None
    return _to_three_channels(array)


def _to_three_channels(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def _min_max(array: np.ndarray, path: str) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, np.float32)
    return ((array - low) / (high - low)).astype(np.float32)


def _read_png16_color(path: str, max_pixels: int) -> np.ndarray:
    """16-bit RGB(A) PNGs: Pillow reduces them to 8 bits, so TensorFlow's decoder reads them."""
    with open(path, "rb") as f:
        data = f.read()
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    _check_size(path, width, height, max_pixels)
    import tensorflow as tf

    try:
        decoded = tf.io.decode_png(data, channels=3, dtype=tf.uint16).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as exc:
        raise ImageError(path, f"truncated or corrupt PNG data ({exc.message})") from None
    return decoded.astype(np.float32) / 65535.0


def _read_dicom(path: str, max_pixels: int) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImageError(path, "reading DICOM needs pydicom: pip install medfound[dicom]") from None
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for broken files
        raise ImageError(path, f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ImageError(path, "DICOM file has no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(path, f"multi-frame DICOM ({frames} frames) is not supported; extract "
                               "the frames to single images first")
    rows, cols = int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))
    _check_size(path, cols, rows, max_pixels)
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise ImageError(path, f"cannot decode DICOM pixel data ({exc})") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB)
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        return _to_three_channels(pixels.astype(np.float32) / float(2 ** bits - 1))
    if pixels.ndim != 2:
        raise ImageError(path, f"unsupported DICOM pixel array shape {pixels.shape}")
    values = _apply_modality_lut(pixels, ds)
    center, width = _window(ds)
    if center is not None and width is not None and width > 1:
        low, high = center - width / 2.0, center + width / 2.0
        array = np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)
    else:
        array = _min_max(values, path)
    if photometric == "MONOCHROME1":
        array = 1.0 - array
    return _to_three_channels(array)


def _apply_modality_lut(pixels: np.ndarray, ds) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float64) * slope + intercept


def _window(ds) -> tuple[float | None, float | None]:
    def first(value):
        if value is None:
            return None
        try:
            return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str)
                         else value)
        except (TypeError, ValueError, IndexError):
            return None
    return first(getattr(ds, "WindowCenter", None)), first(getattr(ds, "WindowWidth", None))


class SkippedFiles:
    """Thread-safe collector of files skipped with ``skip_errors=True``: a list of (path, problem).

    Pass an instance as ``on_error`` to keep a report; every skip is also logged as a warning.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, str]] = []
        self._paths: set[str] = set()

    def __call__(self, path: str, problem: str) -> None:
        with self._lock:
            self.items.append((path, problem))

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, path: str) -> bool:
        """Whether ``path`` was skipped already (a failed file is never read again)."""
        with self._lock:
            if len(self._paths) != len(self.items):
                self._paths = {p for p, _ in self.items}
            return path in self._paths

    def summary(self, limit: int = 20) -> str:
        """Human text listing up to ``limit`` skipped files with their problem."""
        lines = [f"{len(self.items)} file(s) skipped:"]
        lines += [f"  {p}: {problem}" for p, problem in self.items[:limit]]
        if len(self.items) > limit:
            lines.append(f"  ... and {len(self.items) - limit} more")
        return "\n".join(lines)


@contextlib.contextmanager
def naming_bad_images(paths: Sequence[str | os.PathLike] | None, *, hint: str = "",
                      max_pixels: int = DEFAULT_MAX_PIXELS):
    """Re-raises a decode failure inside tf.data, whose message names no file (TensorFlow's PNG
    decoder says only 'Invalid PNG data, size 4185'), as the ``ImageError`` of the first of
    ``paths`` that ``read_image`` refuses, ``hint`` appended; the paths are read only then."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError:
        for path in [] if paths is None else paths:
            path = path.decode() if isinstance(path, bytes) else str(path)
            try:
                read_image(path, max_pixels=max_pixels)
            except ImageError as bad:
                raise ImageError(bad.path, bad.problem + hint) from None
        raise


def make_decoder(*, skip_errors: bool = False, on_error: Callable[[str, str], None] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 defer_to: Callable[[str, str], None] | None = None,
                 large_pixels: int | None = None):
    """Builds a graph function path -> {"image", "path", "_ok"} for use inside ``Dataset.map``.

    Native PNG/JPEG ops decode files whose header checks pass (size limits, complete file); the
    rest go through ``read_image``. ``_ok`` is False only for files skipped with ``skip_errors``
    or, without it, handed to ``defer_to(path, problem)``: a consumer that raises the error itself
    from its own thread (an exception raised inside a parallel ``Dataset.map`` can hang the
    iterator's teardown). With ``large_pixels``, a PNG or JPEG above it is not decoded: its
    ``_later`` is True, for ``map_decode``'s sequential second map to decode.
    """
    import tensorflow as tf

    def python_decode(path_bytes):
        path = path_bytes.decode("utf-8") if isinstance(path_bytes, bytes) else str(path_bytes)
        if skip_errors and isinstance(on_error, SkippedFiles) and path in on_error:
            return np.zeros((MIN_SIDE, MIN_SIDE, 3), np.float32), False  # failed before
        try:
            return read_image(path, max_pixels=max_pixels), True
        except ImageError as exc:
            if not skip_errors and defer_to is not None:
                defer_to(exc.path, exc.problem)
                return np.zeros((MIN_SIDE, MIN_SIDE, 3), np.float32), False
            if not skip_errors:
                raise
            logger.warning("skipping %s", exc)
            if on_error is not None:
                on_error(exc.path, exc.problem)
            return np.zeros((MIN_SIDE, MIN_SIDE, 3), np.float32), False

    def fallback(path):
        image, ok = tf.numpy_function(python_decode, [path], [tf.float32, tf.bool], stateful=False)
        image = tf.reshape(image, tf.stack([tf.shape(image)[0], tf.shape(image)[1], 3]))
        return image, tf.reshape(ok, [])

    def be_uint32(data, offset):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, 4), tf.uint8), tf.int64)
        return raw[0] * 16777216 + raw[1] * 65536 + raw[2] * 256 + raw[3]

    def size_ok(width, height):
        return tf.logical_and(tf.logical_and(width >= MIN_SIDE, height >= MIN_SIDE),
                              width * height <= max_pixels)

    def decode_png(data):
        image = tf.io.decode_png(data, channels=3, dtype=tf.uint16)
        return tf.cast(image, tf.float32) / 65535.0, tf.constant(True)

    def decode_jpeg(data):
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.cast(image, tf.float32) / 255.0, tf.constant(True)

    def later(width, height):
        if large_pixels is None:
            return tf.constant(False)
        return width * height > large_pixels

    def deferred():
        return tf.zeros([MIN_SIDE, MIN_SIDE, 3], tf.float32), tf.constant(True)

    def decode(path):
        image, ok, _ = decode_or_defer(path)
        return {"image": image, "path": path, "_ok": ok}

    def decode_or_defer(path):
        data = tf.io.read_file(path)
        length = tf.strings.length(data)
        is_png = tf.logical_and(length > 45, tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE))
        is_jpeg = tf.logical_and(length > 8, tf.equal(tf.strings.substr(data, 0, 3), JPEG_SOI))

        def native(width, height, decoder):
            return tf.cond(size_ok(width, height), lambda: tf.cond(
                later(width, height), lambda: (*deferred(), True),
                lambda: (*decoder(data), False)), lambda: (*fallback(path), False))

        def png_branch():
            complete = tf.equal(tf.strings.substr(data, length - 12, 12), PNG_IEND)
            return tf.cond(complete, lambda: native(be_uint32(data, 16), be_uint32(data, 20),
                                                    decode_png),
                           lambda: (*fallback(path), False))

        def jpeg_branch():
            complete = tf.equal(tf.strings.substr(data, length - 2, 2), JPEG_EOI)

            def checked():
                shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
                return native(shape[1], shape[0], decode_jpeg)
            return tf.cond(complete, checked, lambda: (*fallback(path), False))

        image, ok, wait = tf.cond(is_png, png_branch, lambda: tf.cond(
            is_jpeg, jpeg_branch, lambda: (*fallback(path), False)))
        image.set_shape((None, None, 3))
        return image, ok, wait

    decode.or_defer = decode_or_defer
    return decode


def decode_calls(num_parallel_calls: int | None, large_pixels: int = LARGE_PIXELS) -> int:
    """Parallel decodes of the first map: what was asked (default: the CPUs), at most
    ``DECODE_BUDGET_PIXELS // large_pixels`` so that the images in flight stay in the budget."""
    wanted = num_parallel_calls if num_parallel_calls and num_parallel_calls > 0 \
        else (os.cpu_count() or 1)
    return max(1, min(wanted, DECODE_BUDGET_PIXELS // large_pixels))


def image_dataset(paths: Sequence[str | os.PathLike] | "tf.data.Dataset", *,
                  num_parallel_calls: int | None = None, skip_errors: bool = False,
                  on_error: Callable[[str, str], None] | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, deterministic: bool | None = None):
    """Streams images from file paths as dicts {"image": float32 (H, W, 3) in [0, 1], "path": string}.

    PNG and JPEG are decoded by native TensorFlow ops in parallel (after in-graph header checks);
    other formats and files failing the checks go through ``read_image``, whose ImageError names the
    file. With ``skip_errors=True`` bad files are dropped, logged and passed to ``on_error(path,
    problem)`` (for example a ``SkippedFiles``) instead of stopping the stream.
    """
    import tensorflow as tf

    if isinstance(paths, tf.data.Dataset):
        path_ds = paths
    else:
        path_ds = tf.data.Dataset.from_tensor_slices(tf.constant([str(p) for p in paths],
                                                                 dtype=tf.string))
    ds = map_decode(path_ds, num_parallel_calls=num_parallel_calls, skip_errors=skip_errors,
                    on_error=on_error, max_pixels=max_pixels, deterministic=deterministic)
    return ds


def map_decode(ds, *, path_key: str | None = None, num_parallel_calls: int | None = None,
               skip_errors: bool = False, on_error: Callable[[str, str], None] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, deterministic: bool | None = None,
               output_key: str = "image", defer_to: Callable[[str, str], None] | None = None,
               transform: Callable | None = None):
    """Decodes a dataset of paths (or of dicts whose ``path_key`` holds a path) into images.

    Elements that are dicts keep their other keys; the decoded image is added under ``output_key``.
    This is the building block behind ``image_dataset`` and the unlabeled and MICLe pipelines.
    ``defer_to`` (see ``make_decoder``) drops a file the Python decoder refused and reports it
    there, for the consumer to raise, instead of raising inside the parallel map.

    Memory is bounded by the decode budget (``LARGE_PIXELS``, ``DECODE_BUDGET_PIXELS``): large
    images decode one at a time in a second map, where ``transform`` (image -> image, e.g. a
    resize) is applied to every image, so a large one never leaves the call that decoded it.
    """
    import tensorflow as tf

    decode = make_decoder(skip_errors=skip_errors, on_error=on_error, max_pixels=max_pixels,
                          defer_to=defer_to, large_pixels=LARGE_PIXELS)
    calls = decode_calls(num_parallel_calls)

    def first(element):
        path = element if path_key is None else element[path_key]
        out = {"path": path} if path_key is None else dict(element)
        out[output_key], out["_ok"], out["_later"] = decode.or_defer(path)
        return out

    def second(element):  # sequential: one large image decoded at a time
        out = dict(element)
        path = out["path"] if path_key is None else out[path_key]
        out[output_key], out["_ok"] = tf.cond(
            out.pop("_later"), lambda: _decode_large(path, max_pixels, skip_errors, on_error,
                                                     defer_to),
            lambda: (out[output_key], out["_ok"]))
        if transform is not None:
            out[output_key] = transform(out[output_key])
        return out

    ds = ds.map(first, num_parallel_calls=calls, deterministic=deterministic)
    ds = ds.map(second)
    if defer_to is not None and not skip_errors:
        ds = ds.filter(lambda e: e["_ok"])  # the consumer raises what defer_to received
    if skip_errors:
        ds = ds.filter(lambda e: e["_ok"])
        # Failures the header checks could not foresee (corrupt data inside a well-formed file)
        # come from native ops without a file name; TensorFlow logs them as it drops them.
        ds = ds.ignore_errors(log_warning=True)
    return ds.map(lambda e: {k: v for k, v in e.items() if k != "_ok"})


def _decode_large(path, max_pixels, skip_errors, on_error, defer_to):
    """An image above LARGE_PIXELS, decoded natively (header checks already passed)."""
    out = make_decoder(skip_errors=skip_errors, on_error=on_error, max_pixels=max_pixels,
                       defer_to=defer_to)(path)
    return out["image"], out["_ok"]


def list_image_files(folder: str | os.PathLike, *, include_dicom: bool = True) -> list[Path]:
    """All image files under ``folder`` (recursive, sorted), by extension; DICOM also by magic bytes."""
    root = Path(folder)
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            lower = name.lower()
            p = Path(dirpath) / name
            if lower.endswith(IMAGE_EXTENSIONS):
                if include_dicom or not lower.endswith(DICOM_EXTENSIONS):
                    files.append(p)
            elif include_dicom and "." not in name and is_dicom_file(p):
                files.append(p)
    return sorted(files)
