"""Errors a user can cause. The CLI prints their message, never a traceback."""


class MailopsError(Exception):
    """Base of every error meant for the user; `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(MailopsError):
    exit_code = 2


class SpecError(MailopsError):
    """The spec has errors; `diagnostics` holds every one of them."""

    exit_code = 2

    def __init__(self, diagnostics):
        self.diagnostics = list(diagnostics)
        first = self.diagnostics[0].format() if self.diagnostics else "invalid spec"
        super().__init__(first)


class SecretError(MailopsError):
    """A secret reference could not be resolved. The message never holds the value."""

    exit_code = 2
