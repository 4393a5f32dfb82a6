"""The agent's own failures: reported to mailops as one line, never as a bug."""

from __future__ import annotations


class AgentFailure(Exception):
    """Base of every error the agent expects (lock taken, install failed, …)."""
