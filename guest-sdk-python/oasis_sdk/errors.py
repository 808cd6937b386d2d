"""Errors a policy reports; the host records them and serves its fallback."""


class PolicyError(Exception):
    """Base class: ``kind`` is the WIT ``policy-error`` case."""

    kind = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        label = {"invalid-settings": "invalid settings", "invalid-request": "invalid request"}.get(
            self.kind, "internal error"
        )
        return f"{label}: {self.message}"


class InvalidSettings(PolicyError):
    """The operator's settings are invalid; the message says which and why."""

    kind = "invalid-settings"


class InvalidRequest(PolicyError):
    """This request cannot be scored by the policy."""

    kind = "invalid-request"


class Internal(PolicyError):
    """Anything else."""

    kind = "internal"
