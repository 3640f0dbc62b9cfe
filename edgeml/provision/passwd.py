"""Mosquitto password files in Mosquitto's own format.

Each line is ``username:$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512 with
a 12-byte salt and a 64-byte derived key, 101 iterations by default — exactly what
``mosquitto_passwd`` (2.x, ``-H sha512-pbkdf2``) writes. The hashing is done here in Python so a
workstation without Mosquitto can produce the file; :func:`hash_with_mosquitto_passwd` uses the
real tool when it is installed (the tests check that both agree).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edgeml.errors import UsageError

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for sha512-pbkdf2
SALT_BYTES = 12
HASH_BYTES = 64


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$...`` hash of ``password`` (the part after ``username:``)."""
    if not password:
        raise UsageError("an empty password cannot be hashed", hint="use a generated password")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(derived).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (salted SHA-512) hash."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
            return hmac.compare_digest(got, expected)
        if len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode() + salt).digest()
            return hmac.compare_digest(got, expected)
    except (ValueError, TypeError):
        return False
    return False


def hash_with_mosquitto_passwd(username: str, password: str) -> str | None:
    """Hash with the real ``mosquitto_passwd`` tool when installed (``None`` when it is not).

    The password goes through a private temporary file (``mosquitto_passwd -U`` in a 0700
    temporary folder removed at once), never a command line that other users could list. That
    file format cannot carry ``:`` or a newline in a password: such a password raises UsageError.
    """
    if ":" in password or "\n" in password or ":" in username:
        raise UsageError("mosquitto_passwd -U cannot hash a password containing ':' or a newline",
                         hint="use hash_password(), or a generated password")
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="edgeml-passwd-") as tmp:
        path = Path(tmp) / "passwd"
        path.write_text(f"{username}:{password}\n")
        os.chmod(path, 0o600)
        subprocess.run([tool, "-U", str(path)], check=True, capture_output=True, timeout=30)
        line = path.read_text().strip()
    user, _, hashed = line.partition(":")
    if user != username or not hashed.startswith("$"):
        return None
    return hashed


def render_password_file(entries: Mapping[str, str]) -> str:
    """Password file text from ``{username: hash}`` (sorted, one line each)."""
    lines = []
    for user in sorted(entries):
        if ":" in user or not user:
            raise UsageError(f"username {user!r} cannot go in a password file", hint="use letters, digits, '-', '_'")
        lines.append(f"{user}:{entries[user]}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_password_file(text: str) -> dict[str, str]:
    """``{username: hash}`` from password file text (blank lines and ``#`` comments ignored)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, _, hashed = line.partition(":")
        out[user] = hashed
    return out
