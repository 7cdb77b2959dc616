"""Verify the identity authgate vouches for, in apps behind the gateway.

authgate removes every client copy of ``kubeflow-userid``, ``kubeflow-groups`` and
``x-authgate-identity`` and sets them on each request it allows; ``x-authgate-identity`` is an
EdDSA JWT signed by authgate, published at ``/authgate/jwks.json``. This package checks that JWT
(signature, issuer, audience = this app's host, expiry) and that the plain headers equal its
claims, so an app can tell a request that really came through authgate from one that did not.
"""

from ._errors import AuthgateVerifyError, JWKSUnavailable, VerificationError
from ._jwks import JWKSCache, parse_jwks
from ._verifier import REQUEST_HOST, Identity, Verifier
from .asgi import AuthgateASGIMiddleware, identity_from_scope, verify_scope
from .wsgi import ENVIRON_KEY, AuthgateMiddleware, identity_from_environ, verify_environ

__all__ = [
    "ENVIRON_KEY",
    "REQUEST_HOST",
    "AuthgateASGIMiddleware",
    "AuthgateMiddleware",
    "AuthgateVerifyError",
    "Identity",
    "JWKSCache",
    "JWKSUnavailable",
    "VerificationError",
    "Verifier",
    "identity_from_environ",
    "identity_from_scope",
    "parse_jwks",
    "verify_environ",
    "verify_scope",
]

__version__ = "0.1.0"
