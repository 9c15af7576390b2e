"""The HTTP side: Label Studio's ML backend protocol, auth, request validation.

Routes: ``GET /health``, ``POST /setup``, ``POST /predict``, ``POST /webhook``,
``GET /versions``, ``GET /metrics`` (Prometheus) and ``GET /projects/<id>/status``
(counts, per-task errors, problems, job state). A malformed request is answered
400 saying what is wrong; a body over ``EXAMINE_MAX_REQUEST_MB`` 413; a project
Label Studio does not have 403; no route answers a traceback.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend import metrics
from backend.labelstudio import LabelStudioError
from backend.payload import (
    BadRequest,
    config_problem,
    normal_url,
    parse_id,
    parse_json_object,
    project_id,
    task_ref,
)
from backend.protocol import ProjectProtocol
from backend.public import public_text
from backend.publish import SCORE_MEANING
from backend.runtime import Backend, Refused, Unavailable
from backend.settings import Settings
from backend.tallies import Tallies
from examine.encoder import EncoderError

log = logging.getLogger(__name__)

_OPEN_ROUTES = {"/health", "/"}


#: What a 404 lists: the addresses this backend answers.
ENDPOINTS = [
    "GET /health",
    "GET /versions",
    "GET /metrics",
    "GET /projects/<project id>/status",
    "POST /setup",
    "POST /predict",
    "POST /webhook",
]


def create_app(settings: Settings | None = None, *, start: bool = True) -> Flask:
    """Build the Flask app (and its background backend); gunicorn serves ``backend._wsgi:app``."""
    settings = settings or Settings.from_env()
    backend = Backend(settings)
    if start:
        backend.start()
    app = Flask("examine-backend")
    app.config["EXAMINE_BACKEND"] = backend
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_mb * 2**20

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

    @app.errorhandler(Refused)
    def _refused(exc: Refused):
        log.warning("refused: %s", exc)
        return jsonify(error=str(exc)), 403

    @app.errorhandler(Unavailable)
    @app.errorhandler(LabelStudioError)
    def _ls(exc: Exception):
        log.warning("Label Studio error: %s", exc)
        return jsonify(error=str(exc)), 502

    @app.errorhandler(EncoderError)
    def _enc(exc: EncoderError):
        log.error("encoder error: %s", exc)
        return jsonify(error=str(exc)), 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 404:  # a guessed address: say which ones exist
            return jsonify(error=f"no such endpoint: {request.method} {request.path}", endpoints=ENDPOINTS), 404
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def _any(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error ({type(exc).__name__}); see the backend log"), 500

    @app.get("/health")
    @app.get("/")
    def health():
        return jsonify(status="UP")

    @app.post("/setup")
    def setup():
        body = _json_body()
        pid = project_id(body.get("project"))
        for name in ("hostname", "access_token", "schema", "label_config"):
            if body.get(name) is not None and not isinstance(body.get(name), str):
                raise BadRequest(f"'{name}' must be a string, got {type(body[name]).__name__}")
        problem = config_problem(body.get("schema", body.get("label_config")))
        if problem:  # refused before the project is remembered: nothing changes, here or in Label Studio
            log.warning("/setup refused for project %s: %s", pid, problem)
            raise BadRequest(f"project {pid}: {problem}")
        if backend.needs_verification(pid, body.get("hostname"), body.get("access_token")):
            _verify(backend, pid, body.get("hostname"), body.get("access_token"))
        # The URL Label Studio calls us by: the one ML backend of a project whose webhook is ours to keep.
        backend.own_urls.add(normal_url(request.url_root))
        return jsonify(model_version=ProjectProtocol(backend, pid).setup(body))

    @app.post("/predict")
    def predict():
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects")
        if not tasks:
            return jsonify(results=[])
        pid = project_id(body["project"] if body.get("project") is not None else tasks[0].get("project"))
        for t in tasks:
            task_ref(t, "task id")
        if not backend.states.exists(pid):
            # Only /setup (Label Studio connecting the backend) adopts a project: answering here would let anyone
            # who reaches the port put a project of the configured Label Studio under this backend.
            log.warning("/predict for project %s, which was never set up here (no /setup): no predictions", pid)
            return jsonify(results=[])
        t0 = time.perf_counter()
        results = ProjectProtocol(backend, pid).predict(tasks)
        log.info("project %s: predicted %d tasks in %.3f s", pid, len(tasks), time.perf_counter() - t0)
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook():
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("webhook payload has no 'action' string")
        project = body.get("project")
        if project is None and isinstance(body.get("task"), dict):
            project = body["task"].get("project")
        if project is None:
            return jsonify(status="ignored", reason="no project"), 200
        pid = project_id(project)
        if not backend.states.exists(pid):
            log.info("webhook %s for project %s, which this backend was not set up for: ignored", action, pid)
            return jsonify(status="ignored", reason="unknown project"), 200
        status = ProjectProtocol(backend, pid).fit(action, body)
        log.info("project %s: event %s %s", pid, action, status)
        return jsonify(status=status), 201 if status == "ok" else 200

    @app.get("/versions")
    def versions():
        versions = sorted(
            {
                s.published_version
                for s in map(backend.states.get, backend.states.known_projects())
                if s.published_version
            }
        )
        return jsonify(versions=versions)

    @app.get("/metrics")
    def prometheus():
        return Response(metrics.render(backend), 200, {"Content-Type": metrics.CONTENT_TYPE})

    tallies = Tallies()

    @app.get("/projects/<pid>/status")
    def status(pid: str):
        pid_ = parse_id(pid, "project")
        if not backend.states.exists(pid_):
            return jsonify(error=f"project {pid_} is not set up on this backend"), 404
        state = backend.states.get(pid_)
        folders = {"MODEL_DIR": settings.model_dir}
        folders.update({f"EXAMINE_DATA_ROOTS[{i}]": root for i, root in enumerate(settings.data_roots)})

        def shown(text: str | None) -> str | None:
            return None if text is None else public_text(text, folders)

        tally = tallies.get(state)  # outside the lock's long hold: at 200,000 tasks a pass over them, reused
        with state.lock:
            out: dict[str, Any] = dict(
                project=pid_,
                published_version=state.published_version,
                complete_version=state.complete_version,
                encoder_version=state.encoder_version,
                synced=state.synced,
                counts=tally["counts"],
                pending=sorted(backend.jobs.pending(pid_) | ({"full"} if state.full_due else set())),
                retrying=shown(backend.jobs.last_error.get(pid_)),
                publishes=state.publishes,
                queue_labels=state.queue_labels,
                queue_head=state.queue[: backend.settings.head_size],
                predictions=len(state.predictions),
                last_publish=state.last_publish,
                last_publish_s=state.last_publish_s,
                stale_versions=len(state.stale_versions),
                problems=[shown(p) for p in [*backend.project_problems(pid_), *backend.problems]],
                errors={str(k): shown(v) for k, v in tally["errors"].items()},
                probe=dict(state.probe),
                flagged=tally["flagged"],
                score=SCORE_MEANING,
            )
        return jsonify(out)

    return app


def _json_body() -> dict[str, Any]:
    if request.content_length is not None and request.content_length > (request.max_content_length or 0) > 0:
        from werkzeug.exceptions import RequestEntityTooLarge

        raise RequestEntityTooLarge()
    return parse_json_object(request.get_data(cache=False))


def _verify(backend: Backend, pid: int, hostname: str | None, token: str | None) -> None:
    """Serve only projects the configured Label Studio has; a known project survives an outage."""
    try:
        backend.verify_project(pid, hostname, token)
    except Unavailable:
        if not backend.states.exists(pid):
            raise
        log.warning("project %s: Label Studio unreachable while verifying; serving the known project", pid)
