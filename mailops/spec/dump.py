"""Spec → YAML text that loads back to an equal Spec.

Keys equal to their defaults are left out, except in hosts when the spec has
`defaults`: those merge under every host, so a host value that equals the
model's default may still differ from `defaults` and must be written. Strings that YAML 1.2
would read as something else (`0o17`, `1e5`, `true`) are quoted.
"""

from __future__ import annotations

import yaml

from mailops.spec.model import Spec
from mailops.spec.source import _plain


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if value and _plain(value) == value and type(_plain(value)) is str else "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_spec(spec: Spec) -> str:
    data = spec.model_dump(mode="json", exclude_defaults=True)
    if spec.defaults is not None:
        data["hosts"] = {
            hid: host.model_dump(mode="json", exclude_none=True) for hid, host in spec.hosts.items()
        }
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
