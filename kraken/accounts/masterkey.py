"""The BYOK master keyring: numbered AES-256 keys, the newest encrypts, any listed one decrypts.

Format (file or ``KRAKEN_BYOK_MASTER_KEY``): one ``version:base64key`` per line (the variable
may also separate entries with commas or spaces); ``#`` starts a comment. Each key is 32 random
bytes (``kraken byok keygen``). Rotation = add a higher version, run ``kraken byok rotate``,
then remove the old line. The file must not be readable by group or others (mode 0600/0400),
because it decrypts every stored provider key.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

KEY_BYTES = 32
_ENTRY = re.compile(r"(\d{1,9}):([A-Za-z0-9+/=_-]+)")


class KeyringError(ValueError):
    """The keyring is missing, malformed or unsafe; the message never contains key material."""


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: Mapping[int, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the BYOK keyring has no keys")

    @property
    def newest(self) -> int:
        return max(self.keys)

    def key(self, version: int) -> bytes | None:
        return self.keys.get(version)

    @classmethod
    def parse(cls, text: str, where: str) -> "Keyring":
        """Parse entries; errors name ``where`` and the line/entry number, never the key."""
        keys: dict[int, bytes] = {}
        entries = [e for line in text.splitlines()
                   for e in re.split(r"[,\s]+", line.split("#", 1)[0]) if e]
        for n, entry in enumerate(entries, 1):
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise KeyringError(f"{where}: entry {n} is not 'version:base64key'")
            version = int(match.group(1))
            if version < 1:
                raise KeyringError(f"{where}: entry {n}: version must be at least 1")
            if version in keys:
                raise KeyringError(f"{where}: entry {n}: version {version} appears twice")
            try:
                raw = base64.b64decode(match.group(2).replace("-", "+").replace("_", "/"),
                                       validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"{where}: entry {n} (version {version}) is not valid base64") from None
            if len(raw) != KEY_BYTES:
                raise KeyringError(f"{where}: entry {n} (version {version}) must decode to "
                                   f"{KEY_BYTES} bytes, not {len(raw)}")
            keys[version] = raw
        if not keys:
            raise KeyringError(f"{where}: no keys (expected lines of 'version:base64key')")
        return cls(keys)


def load(key_file: str, env_value: str) -> Keyring | None:
    """The keyring from the file if set, else from the environment value, else None (BYOK off)."""
    if key_file:
        path = Path(key_file)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyringError(f"{key_file}: BYOK master key file not found") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(f"{key_file}: BYOK master key file must not be accessible by group "
                               f"or others (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"{key_file}: cannot read BYOK master key file ({type(exc).__name__})") from None
        return Keyring.parse(text, key_file)
    if env_value:
        return Keyring.parse(env_value, "KRAKEN_BYOK_MASTER_KEY")
    return None


def new_entry(version: int) -> str:
    """A fresh ``version:base64key`` line (32 bytes from the OS CSPRNG)."""
    if version < 1:
        raise KeyringError("version must be at least 1")
    return f"{version}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
