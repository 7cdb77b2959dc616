"""The JSON body and headers of a refusal, shared by the middlewares."""

from __future__ import annotations

import json
import logging
from typing import List, Tuple

from ._errors import AuthgateVerifyError

log = logging.getLogger("authgate_verify")

STATUS_LINES = {401: "401 Unauthorized", 503: "503 Service Unavailable"}


def refusal(error: AuthgateVerifyError, method: str, path: str) -> Tuple[int, List[Tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a request whose identity was not accepted."""
    log.warning(
        "refused %s %s: %s (%s)", method, path, error.reason, error.message,
    )
    kind = "unavailable" if error.status == 503 else "unauthenticated"
    body = json.dumps({"error": kind, "reason": error.reason, "message": error.message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if error.status == 503:
        headers.append(("Retry-After", "5"))
    return error.status, headers, body
