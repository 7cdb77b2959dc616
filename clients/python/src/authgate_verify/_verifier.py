"""Verification of the identity authgate puts on every request it allows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jwt

from ._errors import VerificationError
from ._jwks import JWKSCache

MAX_TOKEN_BYTES = 16 * 1024


class _RequestHost(enum.Enum):
    REQUEST_HOST = "request-host"


#: Pass as ``audience`` to accept tokens addressed to the request's own ``Host`` header.
#: Weaker than naming the app's host(s): see the README.
REQUEST_HOST = _RequestHost.REQUEST_HOST

Audience = Union[str, Sequence[str], _RequestHost]


@dataclass(frozen=True)
class Identity:
    """Who authgate says made the request, as signed in ``x-authgate-identity``."""

    #: The user as the app sees it in ``kubeflow-userid`` (prefix included), the JWT's ``sub``.
    user: str
    #: The groups, in the order authgate sent them.
    groups: Tuple[str, ...]
    #: How authgate established the identity: ``service_account``, ``oidc_jwt`` or ``session``.
    auth_method: str
    #: The Kubernetes uid of a service-account identity, if any.
    uid: Optional[str] = None
    #: Extra attributes (e.g. the pod a service-account token is bound to).
    extra: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    #: When the signed token expires (Unix seconds).
    expires_at: int = 0
    #: Every claim of the token, for anything not mapped above.
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _fail(reason: str, message: str) -> VerificationError:
    return VerificationError(reason, message)


class Verifier:
    """Verifies the identity headers authgate sets.

    ``issuer`` is authgate's ``public_url`` (a trailing ``/`` is ignored); ``audience`` is the
    host (or hosts) this app is reached at, exactly as clients address it through the gateway
    (lower case, with ``:port`` when not the default), or :data:`REQUEST_HOST`.
    """

    def __init__(
        self,
        *,
        jwks_url: Optional[str] = None,
        issuer: str,
        audience: Audience,
        jwks: Optional[JWKSCache] = None,
        leeway: float = 10.0,
        user_header: str = "kubeflow-userid",
        groups_header: str = "kubeflow-groups",
        token_header: str = "x-authgate-identity",
    ) -> None:
        if (jwks is None) == (jwks_url is None):
            raise ValueError("pass exactly one of jwks_url and jwks")
        self.jwks = jwks if jwks is not None else JWKSCache(jwks_url)  # type: ignore[arg-type]
        if not issuer:
            raise ValueError("issuer is required (authgate's public_url)")
        self.issuer = issuer.rstrip("/")
        if isinstance(audience, _RequestHost):
            self.audiences: Optional[Tuple[str, ...]] = None
        elif isinstance(audience, str):
            self.audiences = (audience.lower(),)
        else:
            self.audiences = tuple(a.lower() for a in audience)
        if self.audiences is not None and (not self.audiences or not all(self.audiences)):
            raise ValueError("audience must name at least one host (or be REQUEST_HOST)")
        if not 0 <= leeway <= 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        self.leeway = leeway
        self.user_header = user_header.lower()
        self.groups_header = groups_header.lower()
        self.token_header = token_header.lower()

    # -- the core ----------------------------------------------------------------------------

    def verify(
        self,
        token: Optional[str],
        user: Optional[str],
        groups: Optional[str],
        host: Optional[str] = None,
    ) -> Identity:
        """Verifies the three header values authgate set; ``None`` for a header that is absent.

        ``host`` is the request's ``Host`` (needed only with :data:`REQUEST_HOST`). Returns the
        identity, or raises :class:`VerificationError` (401) / :class:`JWKSUnavailable` (503).
        """
        if not token:
            raise _fail("missing_identity", f"no {self.token_header} header: not vouched for by authgate")
        if len(token) > MAX_TOKEN_BYTES:
            raise _fail("malformed", "identity token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _fail("malformed", "identity token is not a JWT") from None
        if header.get("alg") != "EdDSA":
            raise _fail("bad_algorithm", "identity token must be signed with EdDSA")
        if "crit" in header:
            raise _fail("malformed", "identity token has critical header parameters")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _fail("malformed", "identity token has no kid")
        key = self.jwks.get(kid)

        audiences = self._audiences(host)
        options: Dict[str, Any] = {"require": ["iss", "aud", "sub", "exp", "nbf", "iat"]}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["EdDSA"],
                audience=list(audiences),
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _fail("expired", "identity token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _fail("not_yet_valid", "identity token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _fail("wrong_audience", "identity token is for another host") from None
        except jwt.InvalidIssuerError:
            raise _fail("wrong_issuer", "identity token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise _fail("bad_signature", "identity token signature does not verify") from None
        except jwt.MissingRequiredClaimError as e:
            raise _fail("malformed", f"identity token lacks the {e.claim!r} claim") from None
        except jwt.PyJWTError as e:
            raise _fail("invalid", f"identity token is invalid: {type(e).__name__}") from None
        # `aud` must be exactly one of ours, also when the token lists several.
        aud = claims.get("aud")
        if isinstance(aud, list) and not all(a in audiences for a in aud):
            raise _fail("wrong_audience", "identity token is also for another host")
        return self._match_headers(claims, user, groups)

    def verify_headers(self, headers: Mapping[str, str], host: Optional[str] = None) -> Identity:
        """Like :meth:`verify`, reading the headers from a case-insensitive mapping.

        For a plain ``dict`` pass lower-case names. ``host`` defaults to the ``host`` header.
        """
        if host is None:
            host = _get(headers, "host")
        return self.verify(
            _get(headers, self.token_header),
            _get(headers, self.user_header),
            _get(headers, self.groups_header),
            host,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _audiences(self, host: Optional[str]) -> Tuple[str, ...]:
        if self.audiences is not None:
            return self.audiences
        if not host:
            raise _fail("no_host", "the request has no Host to check the token's audience against")
        return (host.strip().lower(),)

    def _match_headers(
        self, claims: Mapping[str, Any], user: Optional[str], groups: Optional[str]
    ) -> Identity:
        sub = claims.get("sub")
        signed_groups = claims.get("groups")
        method = claims.get("auth_method")
        if not isinstance(sub, str) or not sub:
            raise _fail("malformed", "identity token has no subject")
        if not isinstance(signed_groups, list) or not all(isinstance(g, str) for g in signed_groups):
            raise _fail("malformed", "identity token's groups are not a list of strings")
        if not isinstance(method, str):
            raise _fail("malformed", "identity token has no auth_method")
        if user != sub:
            raise _fail(
                "header_mismatch",
                f"{self.user_header} does not match the signed identity",
            )
        # authgate omits the groups header for an identity without groups.
        if (groups or "") != ",".join(signed_groups):
            raise _fail(
                "header_mismatch",
                f"{self.groups_header} does not match the signed identity",
            )
        uid = claims.get("uid")
        extra_claim = claims.get("extra") or {}
        extra: Dict[str, Tuple[str, ...]] = {}
        if isinstance(extra_claim, dict):
            for k, v in extra_claim.items():
                if isinstance(v, list):
                    extra[str(k)] = tuple(str(x) for x in v)
        return Identity(
            user=sub,
            groups=tuple(signed_groups),
            auth_method=method,
            uid=uid if isinstance(uid, str) else None,
            extra=extra,
            expires_at=int(claims["exp"]),
            claims=dict(claims),
        )


def _get(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None and type(headers) is dict:
        # A plain dict is case-sensitive: look the name up in any case.
        for k, v in headers.items():
            if k.lower() == name:
                return v
    return value
