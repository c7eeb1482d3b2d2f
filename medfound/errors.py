"""Errors a user fixes (bad input, settings or folders), told apart from bugs.

Every subclass of ``UserError`` is a ``ValueError`` whose message names the file, folder or
setting at fault; the ``medfound`` command prints it as one line and exits 2.
"""
from __future__ import annotations

import errno

# Storage failures a user fixes outside medfound (free space, permissions, mounts): reported as
# one line naming the file instead of a traceback through TensorFlow or h5py.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EFBIG)


class UserError(ValueError):
    """A problem with what the user gave (a file, a folder, a setting); the message says which."""


class RunFolderError(UserError):
    """An --out folder that is not a run of this command, or holds a run made otherwise."""


class RunLockedError(UserError):
    """Another process is using the run folder."""


class TrainingDivergedError(UserError):
    """A non-finite loss or weight: the run stopped, its last finite checkpoint kept."""


class BackboneError(UserError):
    """A backbone spec that names nothing loadable, or a file that does not fit what it claims."""
