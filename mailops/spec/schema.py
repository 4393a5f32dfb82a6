"""The JSON Schema of the spec, generated from the model (committed as schemas/).

Field docstrings (the string right under a field of a model class) become the
fields' descriptions here, read from the model's source when a schema is made.
pydantic could collect them itself (`use_attribute_docstrings`), but it would
do so at import, for every command, by parsing the module's source once per
class: most of the time it takes to import the model.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import sys

from pydantic.json_schema import GenerateJsonSchema

from mailops.spec.model import Spec

SCHEMA_ID = "https://mailops.invalid/schemas/mailops.schema.json"


def schema() -> dict:
    body = Spec.model_json_schema(mode="validation", schema_generator=_Documented)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **body}


def schema_text() -> str:
    """Deterministic text: the same model always gives the same bytes."""
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Documented(GenerateJsonSchema):
    """pydantic's generator, with each field's docstring as its description
    (unless the field has one of its own, as `Field(description=…)` gives)."""

    def model_schema(self, schema):
        json_schema = super().model_schema(schema)
        docs = field_docs(schema["cls"])
        for name, prop in json_schema.get("properties", {}).items():
            if name in docs and "description" not in prop:
                prop["description"] = docs[name]
        return json_schema


def field_docs(cls: type) -> dict[str, str]:
    """Field name → docstring, for the fields of `cls` and the classes it
    inherits from; each field documented by the class that declares it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        own = inspect.get_annotations(klass)
        if not own:
            continue
        found = _class_docs(klass.__module__, klass.__qualname__)
        for name in own:
            if name in found:
                docs[name] = found[name]
            else:
                docs.pop(name, None)  # declared again, without a docstring
    return docs


def _class_docs(module: str, qualname: str) -> dict[str, str]:
    node = _module_classes(module).get(qualname)
    if node is None:
        return {}
    docs = {}
    for field, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


@functools.cache
def _module_classes(module: str) -> dict[str, ast.ClassDef]:
    """Every class of a module by qualified name, from one parse of its source."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module]))
    except (KeyError, OSError, TypeError):
        return {}
    found: dict[str, ast.ClassDef] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = node
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found
