"""Errors of plan and apply. Each names the host it is about."""

from __future__ import annotations

from mailops.errors import MailopsError


class DeployError(MailopsError):
    """Something went wrong on or on the way to one host; other hosts go on."""

    exit_code = 1


class HostKeyError(DeployError):
    """The host's SSH key is unknown or changed: nothing was sent to it."""


class ConnectionLost(DeployError):
    """The connection ended while a request was under way."""


class AgentError(DeployError):
    """The agent on the host answered a request with an error."""
