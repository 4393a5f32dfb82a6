"""What a host should have: the bundle's files at their paths on the host,
with the mode and owner each gets there, and the folders that hold them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from mailops.deploy.layout import Layout
from mailops.render.bundle import Bundle


@dataclass(frozen=True)
class Desired:
    path: str  # absolute, on the host
    rel: str  # the bundle's name for it (shown in plans)
    data: bytes
    sha256: str
    mode: int
    owner: str | None  # None: whoever the agent runs as
    group: str | None
    secret: bool
    runtime_reads: bool  # the runtime reports its hash (everything but the unit)


def desired_files(bundle: Bundle, layout: Layout) -> list[Desired]:
    """Where the runtime runs as its own user, secrets are root:mailops and
    group-readable (0600 → 0640): the runtime reads them, cannot change them,
    and nobody else can read them."""
    out = []
    for rel in sorted(bundle.files):
        item = bundle.files[rel]
        mode, owner, group = item.mode, None, None
        if layout.run_user:
            owner, group = "root", "root"
            if item.secret:
                mode, group = item.mode | 0o040, layout.run_user
        out.append(
            Desired(
                path=layout.target(item),
                rel=rel,
                data=item.data,
                sha256=item.sha256,
                mode=mode,
                owner=owner,
                group=group,
                secret=item.secret,
                runtime_reads=item.target is None,
            )
        )
    return out


def desired_dirs(desired: list[Desired], layout: Layout) -> list[dict]:
    """The config folder and its subfolders, and the data folder, with modes."""
    if layout.run_user:
        config = {"mode": 0o750, "owner": "root", "group": layout.run_user}
        data = {"mode": 0o750, "owner": layout.run_user, "group": layout.run_user}
    else:
        config = {"mode": 0o755}
        data = {"mode": 0o750}
    folders = {layout.config_dir}
    for item in desired:
        parent = str(PurePosixPath(item.path).parent)
        if parent.startswith(layout.config_dir + "/"):
            folders.add(parent)
    dirs = [dict(config, path=f) for f in sorted(folders)]
    dirs.append(dict(data, path=layout.data_dir))
    return dirs
