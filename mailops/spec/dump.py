"""Spec → YAML text (normalised: names as stored, defaults left out)."""

from __future__ import annotations

import yaml

from mailops.spec.model import Spec


def dump_spec(spec: Spec) -> str:
    data = spec.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
