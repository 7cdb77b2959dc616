"""The real kfp SDK with a personal access token, as a person on a laptop uses it.

    .venv-kfp/bin/python tests/python/kfp_with_token.py <host> <token>

Lists experiments in team-a (the token's namespace) and in team-b (outside it), and prints one
JSON line: {"team-a": "ok" | <HTTP status>, "team-b": ...}.
"""
import json
import sys
import warnings

warnings.simplefilter("ignore")

import kfp  # noqa: E402
from kfp_server_api.exceptions import ApiException  # noqa: E402

host, token = sys.argv[1], sys.argv[2]
# With a namespace, the client asks nothing at start (no healthz call, which names no namespace
# and which a scoped token may not make).
client = kfp.Client(host=host, existing_token=token, namespace="team-a")
outcome = {}
for namespace in ("team-a", "team-b"):
    try:
        client.list_experiments(namespace=namespace)
        outcome[namespace] = "ok"
    except ApiException as e:
        outcome[namespace] = e.status
print(json.dumps(outcome))
