"""The JSON Schema of the spec, generated from the model (committed as schemas/)."""

from __future__ import annotations

import json

from mailops.spec.model import Spec

SCHEMA_ID = "https://mailops.invalid/schemas/mailops.schema.json"


def schema() -> dict:
    body = Spec.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **body}


def schema_text() -> str:
    """Deterministic text: the same model always gives the same bytes."""
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
