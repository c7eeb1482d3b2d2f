"""Small shared helpers: file hashing and atomic writes."""
from medfound.utils.files import atomic_path, sha256_file, sha256_path

__all__ = ["atomic_path", "sha256_file", "sha256_path"]
