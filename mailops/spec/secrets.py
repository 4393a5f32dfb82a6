"""Secret references and password hashes.

A secret never sits in the spec as a literal: `{env: NAME}` reads an
environment variable, `{file: path}` reads a file relative to the spec. They
are resolved only when rendering. Password hashes live in `mailops.passwords`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from mailops import inputs
from mailops.errors import SecretError


class SecretRef(BaseModel):
    """A secret kept out of the spec: `{env: NAME}` or `{file: path}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    """Name of an environment variable that holds the secret."""
    file: str | None = None
    """Path of a file that holds the secret (relative to the spec file); one trailing
    newline is removed."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("needs exactly one of 'env' or 'file'")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def resolve(self, base_dir: Path) -> str:
        """The secret's value. Errors name the reference, never the value."""
        if self.env is not None:
            inputs.note_variable(self.env)
            value = os.environ.get(self.env)
            if value is None:
                raise SecretError(f"secret {self.describe()} is not set")
            return value
        path = Path(self.file).expanduser()  # type: ignore[arg-type]
        path = path if path.is_absolute() else base_dir / path
        inputs.note_file(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SecretError(f"secret file {path} cannot be read: {reason}") from None
        return text[:-1] if text.endswith("\n") else text
