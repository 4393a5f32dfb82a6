"""A Bundle: the files one host should have, as bytes with a mode.

Paths are relative to the host's config folder (paths.config), so a bundle can
be written to /etc/mailops by apply or to any folder by `mailops render --out`;
runtime.toml refers to its neighbours by these relative paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from mailops.files import write_atomic


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the config folder, '/'-separated
    data: bytes
    mode: int = 0o644
    secret: bool = False  # never shown in diffs or logs
    target: str | None = None  # absolute path on the host, for files outside the config folder

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Bundle:
    host: str
    files: dict[str, BundleFile] = field(default_factory=dict)

    def add(
        self,
        path: str,
        data: bytes,
        mode: int = 0o644,
        secret: bool = False,
        target: str | None = None,
    ) -> None:
        self.files[path] = BundleFile(path, data, mode, secret, target)

    def write(self, folder: Path) -> list[Path]:
        """Write every file under `folder`, each atomically (render everything
        first, so a failure leaves no half-rendered mixture behind)."""
        written = []
        for name in sorted(self.files):
            item = self.files[name]
            target = folder / name
            write_atomic(target, item.data, item.mode)
            written.append(target)
        return written
