"""Detached release signatures with OpenSSH's ``ssh-keygen -Y sign`` / ``-Y verify`` (OpenSSH 8.1+).

A checksum only proves that a file is the one the checksum list names; whoever can replace the
files can replace the list too. A signature over ``SHA256SUMS`` (which lists ``manifest.json``,
which lists every file and probe) proves that the holder of a private key vouched for exactly
this release. ``ssh-keygen`` is everywhere OpenSSH is, and its signatures are namespaced, so a
release signature cannot be replayed as, say, a git commit signature.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from medfound.utils.files import atomic_path

NAMESPACE = "medfound-release"  # ssh-keygen -n: what the signature is for
PRINCIPAL = "medfound-release-signer"
SIGNATURE_SUFFIX = ".sig"


class SigningError(ValueError):
    """Signing or checking a signature failed; the message says which file and why."""


def _ssh_keygen() -> str:
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise SigningError("ssh-keygen not found: install OpenSSH (8.1 or newer) to sign or "
                           "check release signatures")
    return tool


def signature_path(signed: Path) -> Path:
    return signed.with_name(signed.name + SIGNATURE_SUFFIX)


def check_can_sign(private_key: str | os.PathLike) -> None:
    """Signs a few fixed bytes with ``private_key`` and throws the signature away: a missing
    ssh-keygen, a key that is not a readable file or that ssh-keygen cannot use is found before
    a release is rewritten (publish calls this before touching disk)."""
    private_key = Path(private_key)
    try:
        with open(private_key, "rb") as f:
            f.read(1)
    except OSError as err:
        raise SigningError(f"{private_key}: not a readable private key file "
                           f"({err.strerror or err})") from None
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "trial"
        trial.write_bytes(b"medfound signing check\n")
        sign_file(trial, private_key)


def sign_file(signed: str | os.PathLike, private_key: str | os.PathLike) -> Path:
    """Writes ``<signed>.sig``, a detached SSH signature of ``signed`` by ``private_key``."""
    signed, private_key = Path(signed), Path(private_key)
    if not private_key.is_file():
        raise SigningError(f"{private_key}: no such private key file")
    tool = _ssh_keygen()
    with open(signed, "rb") as data:
        done = subprocess.run([tool, "-Y", "sign", "-f", str(private_key), "-n", NAMESPACE],
                              stdin=data, capture_output=True)
    if done.returncode != 0 or not done.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise SigningError(f"{private_key}: ssh-keygen could not sign {signed.name} "
                           f"({reason[-1] if reason else 'no output'})")
    target = signature_path(signed)
    with atomic_path(target) as tmp:
        tmp.write_bytes(done.stdout)
    return target


def _allowed_signers(public_key: Path) -> str:
    """An allowed_signers line for a ``.pub`` key file (or the file itself if it is one)."""
    try:
        lines = [line.strip() for line in public_key.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise SigningError(f"{public_key}: cannot read the public key ({err})") from err
    if not lines:
        raise SigningError(f"{public_key}: empty; expected an OpenSSH public key (.pub)")
    fields = lines[0].split()
    if fields[0].startswith(("ssh-", "ecdsa-", "sk-")) and len(fields) >= 2:
        return f"{PRINCIPAL} {fields[0]} {fields[1]}\n"
    raise SigningError(f"{public_key}: not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')")


def verify_file(signed: str | os.PathLike, public_key: str | os.PathLike) -> str:
    """Checks ``<signed>.sig`` against ``public_key``; returns ssh-keygen's 'Good signature' line."""
    signed, public_key = Path(signed), Path(public_key)
    signature = signature_path(signed)
    if not signature.is_file():
        raise SigningError(f"{signature.name}: missing; the release is not signed (or the "
                           "signature was removed)")
    with tempfile.TemporaryDirectory() as scratch:
        allowed = Path(scratch) / "allowed_signers"
        allowed.write_text(_allowed_signers(public_key))
        with open(signed, "rb") as data:
            done = subprocess.run([_ssh_keygen(), "-Y", "verify", "-f", str(allowed), "-I",
                                   PRINCIPAL, "-n", NAMESPACE, "-s", str(signature)],
                                  stdin=data, capture_output=True)
    said = (done.stdout + done.stderr).decode(errors="replace").strip()
    if done.returncode != 0:
        raise SigningError(f"{signature.name}: not a valid signature of {signed.name} by "
                           f"{public_key} ({said.splitlines()[-1] if said else 'rejected'})")
    return said.splitlines()[0] if said else "Good signature"
