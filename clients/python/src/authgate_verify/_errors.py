"""Why an identity was not accepted."""

from __future__ import annotations


class AuthgateVerifyError(Exception):
    """Base class: the request's identity must not be trusted."""

    #: The HTTP status a middleware answers with.
    status: int = 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        #: A short machine-readable reason, e.g. ``bad_signature``.
        self.reason = reason
        #: A human-readable explanation (safe to show: it never contains a token).
        self.message = message


class VerificationError(AuthgateVerifyError):
    """The identity does not verify (missing, forged, expired, for another app, mismatched)."""

    status = 401


class JWKSUnavailable(AuthgateVerifyError):
    """authgate's JWKS cannot be fetched, so nothing can be verified (answered with 503)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__("jwks_unavailable", message)
