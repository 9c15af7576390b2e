"""The HTTP side: Label Studio's ML backend protocol, auth and request validation.

Routes: ``GET /health``, ``POST /setup``, ``POST /predict``, ``POST /webhook``,
``GET /versions``, plus ``GET /projects/<id>/status`` (counts and per-task errors).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from backend.labelstudio import LabelStudioError
from backend.model import Backend, ProjectModel, project_id
from backend.settings import Settings
from examine.encoder import EncoderError

log = logging.getLogger(__name__)

_OPEN_ROUTES = {"/health"}


class BadRequest(ValueError):
    """The request body is not what Label Studio sends; answered with 400 and the reason."""


def create_app(settings: Settings | None = None, *, start: bool = True) -> Flask:
    """Build the Flask app (and its background backend); gunicorn serves ``backend._wsgi:app``."""
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = Backend(settings)
    if start:
        backend.start()
    app = Flask("examine-backend")
    app.config["EXAMINE_BACKEND"] = backend

    @app.before_request
    def _auth() -> Response | None:
        if not settings.auth_required or request.path in _OPEN_ROUTES:
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), settings.basic_auth_pass.encode())
        )
        if ok:
            return None
        return Response("authentication required", 401, {"WWW-Authenticate": 'Basic realm="examine"'})

    @app.errorhandler(BadRequest)
    def _bad(exc: BadRequest):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(LabelStudioError)
    def _ls(exc: LabelStudioError):
        log.warning("Label Studio error: %s", exc)
        return jsonify(error=str(exc)), 502

    @app.errorhandler(EncoderError)
    def _enc(exc: EncoderError):
        log.error("encoder error: %s", exc)
        return jsonify(error=str(exc)), 500

    @app.get("/health")
    @app.get("/")
    def health():
        return jsonify(status="UP", model_class="ExamineModel")

    @app.post("/setup")
    def setup():
        body = _json_body()
        pid = _pid(body.get("project"))
        version = ProjectModel(backend, pid).setup(body)
        return jsonify(model_version=version)

    @app.post("/predict")
    def predict():
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and "id" in t for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects with an 'id'")
        if not tasks:
            return jsonify(results=[])
        pid = _pid(body.get("project") or tasks[0].get("project"))
        t0 = time.perf_counter()
        results = ProjectModel(backend, pid).predict(tasks, context=body.get("context"))
        log.info("project %s: predicted %d tasks in %.2f s", pid, len(tasks), time.perf_counter() - t0)
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str):
            raise BadRequest("webhook payload has no 'action'")
        project = body.get("project")
        if project is None:
            task = body.get("task") or {}
            project = task.get("project") if isinstance(task, dict) else None
        if project is None:
            log.info("webhook %s without a project: ignored", action)
            return jsonify(status="ignored"), 200
        pid = _pid(project)
        ProjectModel(backend, pid).fit(action, body)
        return jsonify(status="ok"), 201

    @app.get("/versions")
    def versions():
        versions = sorted({s.published_version for s in map(backend.states.get, backend.states.known_projects())
                           if s.published_version})
        return jsonify(versions=versions, model_dir=str(settings.model_dir))

    @app.get("/projects/<int:pid>/status")
    def status(pid: int):
        state = backend.states.get(pid)
        return jsonify(
            project=pid,
            published_version=state.published_version,
            encoder_version=state.encoder_version,
            counts=state.counts(),
            pending=sorted(backend.jobs.pending(pid)),
            errors={str(k): v for k, v in state.errors().items()},
        )

    return app


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    return body


def _pid(value: Any) -> int:
    try:
        return project_id(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
