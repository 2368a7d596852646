"""Telling a running endpoint (``make serve``: include/lifecycle/serving.py) to load a newly
deployed champion. Best effort: the endpoint also polls the registry."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

SERVING_URL_VARIABLE = "ml_serving_url"
"""Airflow variable (or ``$ML_SERVING_URL``) with the base URL of the local endpoint, e.g.
``http://127.0.0.1:8081``; deploy_model posts to ``<url>/reload`` when it is set."""

log = logging.getLogger("airflow.task")


def serving_url() -> str | None:
    from airflow.sdk import Variable

    return Variable.get(SERVING_URL_VARIABLE, default=None) or os.environ.get("ML_SERVING_URL") or None


def notify_serving(problem: str, version: int | None, *, timeout: float = 2.0) -> dict[str, Any]:
    """Ask the running endpoint, if any, to reload its champion. Best effort: never raises (a
    deployment must not fail because no server runs); the outcome is logged and returned."""
    url = serving_url()
    if not url:
        log.info("serving: no %s set, no endpoint to tell about version %s", SERVING_URL_VARIABLE, version)
        return {"notified": False, "reason": f"variable {SERVING_URL_VARIABLE} not set"}
    target = url.rstrip("/") + "/reload"
    req = urllib.request.Request(target, data=b"", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        log.warning("serving: could not reach %s (%s); it will pick up version %s when it polls", target, exc, version)
        return {"notified": False, "url": target, "error": str(exc)[:200]}
    log.info("serving: %s answered %s", target, answer)
    return {"notified": True, "url": target, "model_version": answer.get("model_version"), "error": answer.get("error")}
