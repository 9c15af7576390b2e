"""A small Label Studio REST client built on `requests.Session`.

`LabelStudio` authenticates with either kind of Label Studio API key:

* a legacy token (40 hex characters) is sent as ``Authorization: Token <key>``;
* a personal access token (a JWT refresh token, ``header.payload.signature``) is exchanged at
  ``POST /api/token/refresh/`` for a short-lived access token, sent as ``Authorization: Bearer``,
  and exchanged again when Label Studio answers 401.

The key is only ever sent to the Label Studio origin given to the constructor: never to other
hosts, never into logs, reprs or exception messages.

Connection errors, 429 and 5xx answers are retried with exponential backoff (`urllib3` `Retry`);
POST requests, which are not idempotent, are retried only when nothing reached the server
(connection refused) or the server said it did not process them (429, 503). 4xx are not retried.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from backend.lshttp import (
    _CHUNK,
    _CLOUD_SCHEMES,
    _DEFAULT_PORTS,
    _MAX_REDIRECTS,
    LabelStudioError,
    _display,
    _origin,
    _Retry,
    error_from_response,
    is_data_path,
    is_personal_access_token,
)

__all__ = ["LabelStudio", "LabelStudioError", "is_personal_access_token"]

log = logging.getLogger(__name__)
_BULK_READ_S = 900.0  # read timeout of bulk imports and whole listings (200,000-task projects)


class LabelStudio:
    """Client for one Label Studio server.

    ``url`` is the Label Studio base URL as the backend reaches it. ``api_key`` is a legacy token or a
    personal access token. ``allowed_hosts`` lists other hosts (``name``, ``name:port`` or
    ``*.domain``) that task images may be downloaded from; they never receive the API key.
    ``aliases`` are other base URLs of the same Label Studio as written into tasks (its
    LABEL_STUDIO_HOST, e.g. ``http://localhost:8080`` when the backend reaches it as
    ``http://label-studio:8080``): image URLs there are fetched from ``url`` instead.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        allowed_hosts: Sequence[str] = (),
        max_image_bytes: int = 512 * 2**20,
        aliases: Sequence[str] = (),
        connect_timeout: float | None = None,
        download_deadline: float | None = None,
    ) -> None:
        url = url.strip().rstrip("/")
        if urlsplit(url).scheme.lower() not in _DEFAULT_PORTS or not urlsplit(url).hostname:
            raise ValueError(f"Label Studio URL must be http(s)://host[:port], got {url!r}")
        if not api_key or not api_key.strip():
            raise ValueError("Label Studio API key is empty")
        self.url = url
        self.timeout = timeout
        # requests takes (connect, read); a short connect timeout keeps a dead host from holding a thread.
        self._timeout: float | tuple[float, float] = (connect_timeout, timeout) if connect_timeout else timeout
        self.download_deadline = download_deadline
        self.max_image_bytes = max_image_bytes
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        self._origin = _origin(url)
        self._aliases = tuple(_origin(a.strip()) for a in aliases if a.strip())
        self._key = api_key.strip()
        self._pat = is_personal_access_token(self._key)
        self._access: str | None = None
        self._lock = threading.Lock()
        self.session = requests.Session()
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"PATCH"},
            raise_on_status=False,
            raise_on_redirect=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "examine-backend"

    @property
    def auth_kind(self) -> str:
        """``"personal access token"`` or ``"legacy token"``."""
        return "personal access token" if self._pat else "legacy token"

    def __repr__(self) -> str:
        return f"LabelStudio(url={self.url!r}, auth={self.auth_kind!r})"

    def close(self) -> None:
        """Close the underlying session."""
        self.session.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def _is_ls(self, url: str) -> bool:
        return _origin(url) == self._origin

    def _is_ls_data(self, url: str) -> bool:
        base, path = urlsplit(self.url).path.rstrip("/"), urlsplit(url).path
        return self._is_ls(url) and path.startswith(base + "/") and is_data_path(path[len(base) :])

    def _host_allowed(self, url: str) -> bool:
        scheme, host, port = _origin(url)
        netloc = f"{host}:{port}"
        for entry in self.allowed_hosts:
            if entry in (host, netloc):
                return True
            if entry.startswith("*.") and host.endswith(entry[1:]):
                return True
        return False

    def _redact(self, text: str) -> str:
        text = text.replace(self._key, "***")
        return text.replace(self._access, "***") if self._access else text

    def _refresh(self) -> str:
        """Exchange the personal access token for a new access token (caller holds the lock)."""
        path = "/api/token/refresh/"
        try:
            r = self.session.post(self.url + path, json={"refresh": self._key}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self._unreachable("POST", path, exc) from None
        if r.status_code != 200:
            raise LabelStudioError(
                f"POST {path} -> {r.status_code}: Label Studio refused the personal access token "
                "(expired, revoked, or issued by another Label Studio)",
                status=r.status_code,
            )
        access = r.json().get("access")
        if not access:
            raise LabelStudioError(f"POST {path} -> {r.status_code}: no access token in the answer")
        self._access = access
        return access

    def _auth_header(self) -> str:
        if not self._pat:
            return f"Token {self._key}"
        with self._lock:
            return f"Bearer {self._access or self._refresh()}"

    def _unreachable(self, method: str, what: str, exc: Exception, url: str | None = None) -> LabelStudioError:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectTimeout):
            reason = "connection timed out"
        elif isinstance(exc, requests.Timeout):
            reason = f"timed out after {self.timeout:g} s"
        elif isinstance(exc, requests.ConnectionError):
            reason = "connection failed"
        where = self.url if url is None or self._is_ls(url) else urlsplit(url).netloc
        return LabelStudioError(f"{method} {what}: {reason} ({where})")

    def _send(self, method: str, url: str, what: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        """Send one request; the key goes only to the Label Studio origin (and only when ``auth``). 401 → one
        token refresh."""
        headers = dict(kwargs.pop("headers", None) or {})
        with_auth = auth and self._is_ls(url)
        kwargs.setdefault("timeout", self._timeout)
        for attempt in (0, 1):
            if with_auth:
                headers["Authorization"] = self._auth_header()
            else:
                headers.pop("Authorization", None)
            sent = headers.get("Authorization")
            try:
                resp = self.session.request(method, url, headers=headers, **kwargs)
            except requests.RequestException as exc:
                raise self._unreachable(method, what, exc, url) from None
            if resp.status_code == 401 and with_auth and self._pat and attempt == 0:
                resp.close()
                with self._lock:
                    if sent == f"Bearer {self._access}":
                        self._refresh()
                continue
            return resp
        return resp

    def _error(self, method: str, what: str, resp: requests.Response, hint: str = "") -> LabelStudioError:
        if resp.status_code == 401 and not hint:
            hint = f"check the Label Studio API key ({self.auth_kind})"
        return error_from_response(method, what, resp, hint, self._redact)

    def request(self, method: str, path: str, *, ok_404: bool = False, **kwargs: Any) -> requests.Response | None:
        """Call the Label Studio API at ``path`` (starting with ``/``); raise `LabelStudioError` unless 2xx.

        With ``ok_404`` a 404 returns None instead of raising. Other keyword arguments go to
        `requests.Session.request` (``params``, ``json``, ``files``, ...).
        """
        resp = self._send(method, self.url + path, path, **kwargs)
        if ok_404 and resp.status_code == 404:
            return None
        if not resp.ok:
            raise self._error(method, path, resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        assert resp is not None
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # ----------------------------------------------------------------- server

    def health(self) -> bool:
        """True when ``GET /health`` answers 200 (never raises)."""
        try:
            resp = self._send("GET", self.url + "/health", "/health")
            return resp.status_code == 200
        except LabelStudioError:
            return False

    def whoami(self) -> dict:
        """The user the API key belongs to (``GET /api/current-user/whoami``)."""
        return self._json("GET", "/api/current-user/whoami")

    # --------------------------------------------------------------- projects

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict:
        """Create a project (``POST /api/projects/``); ``fields`` are other project attributes."""
        return self._json("POST", "/api/projects/", json={"title": title, "label_config": label_config, **fields})

    def get_project(self, pid: int) -> dict:
        """``GET /api/projects/{pid}/``."""
        return self._json("GET", f"/api/projects/{pid}/")

    def update_project(self, pid: int, **fields: Any) -> dict:
        """``PATCH /api/projects/{pid}/`` with ``fields`` (e.g. ``model_version``, ``sampling``)."""
        return self._json("PATCH", f"/api/projects/{pid}/", json=fields)

    # ------------------------------------------------------------------ tasks

    def iter_tasks(
        self,
        pid: int,
        *,
        page_size: int = 1000,
        fields: str = "task_only",
        view: int | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[dict]:
        """Yield the project's tasks page by page (``GET /api/tasks/``).

        ``fields`` is ``"task_only"`` (fast) or ``"all"`` (with predictions, annotations and Data
        Manager columns). ``view`` applies a Data Manager tab; ``query`` is the Data Manager query
        (e.g. ``{"ordering": ["tasks:predictions_score"]}``).
        """
        seen = 0
        page = 1
        while True:
            params: dict[str, Any] = {"project": pid, "page": page, "page_size": page_size, "fields": fields}
            if view is not None:
                params["view"] = view
            if query is not None:
                params["query"] = json.dumps(dict(query))
            # Label Studio answers 404 for a page past the last one.
            resp = self.request("GET", "/api/tasks/", params=params, ok_404=page > 1)
            if resp is None:
                return
            body = resp.json()
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            total = body.get("total") if isinstance(body, dict) else None
            yield from tasks
            seen += len(tasks)
            if len(tasks) < page_size or (total is not None and seen >= total):
                return
            page += 1

    def get_task(self, tid: int) -> dict:
        """``GET /api/tasks/{tid}/``."""
        return self._json("GET", f"/api/tasks/{tid}/")

    def import_tasks(self, pid: int, tasks: list[dict]) -> list[int] | dict:
        """Import task dicts; returns the new task ids in order (or Label Studio's answer when it has none)."""
        body = self._json("POST", f"/api/projects/{pid}/import", params={"return_task_ids": "true"}, json=tasks)
        return body["task_ids"] if isinstance(body, dict) and "task_ids" in body else body

    def import_files(self, pid: int, files: Mapping[str, bytes]) -> list[int] | dict:
        """Upload files (name → content) as new tasks, one per file; returns the new task ids."""
        parts = {f"file{i}": (name, content) for i, (name, content) in enumerate(files.items())}
        body = self._json("POST", f"/api/projects/{pid}/import", params={"return_task_ids": "true"}, files=parts)
        return body["task_ids"] if isinstance(body, dict) and "task_ids" in body else body

    def next_task(self, pid: int, view: int | None = None) -> dict | None:
        """The next task of the label stream (``GET /api/projects/{pid}/next/``), or None when none is left."""
        params = {"view": view} if view is not None else None
        resp = self.request("GET", f"/api/projects/{pid}/next/", params=params, ok_404=True)
        return None if resp is None else resp.json()

    # ------------------------------------------------------------ predictions

    def import_predictions(self, pid: int, predictions: list[dict], *, batch_size: int = 2000) -> int:
        """Create predictions in batches, in the given order; returns how many Label Studio created.

        Each item: ``{"task": id, "model_version": str, "score": float in [0, 1], "result": [...]}``.
        Raises ValueError for a score outside [0, 1] (Label Studio would drop it silently).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for p in predictions:
            score = p.get("score")
            if score is not None and not 0.0 <= float(score) <= 1.0:
                # Label Studio 1.23 validates scores against [0, 1] and silently drops the others.
                raise ValueError(f"prediction score must be within [0, 1]: task {p.get('task')} has {score}")
        created = 0
        path = f"/api/projects/{pid}/import/predictions"
        for start in range(0, len(predictions), batch_size):
            batch = predictions[start : start + batch_size]
            # Label Studio's cost grows with the project (~13 s at 20,000 tasks): a long read timeout.
            body = self._json("POST", path, json=batch, timeout=self._bulk_timeout())
            n = int(body.get("created", len(batch))) if isinstance(body, dict) else len(batch)
            if n < len(batch):
                log.warning(
                    "project %s: Label Studio created %d of %d predictions (it drops predictions whose "
                    "result does not fit the label config; see its log)",
                    pid,
                    n,
                    len(batch),
                )
            created += n
        return created

    def create_prediction(self, prediction: dict) -> dict:
        """Create one prediction (``POST /api/predictions/``; 0.07 s on 20,000 tasks, a bulk import ~13 s)."""
        score = prediction.get("score")
        if score is not None and not 0.0 <= float(score) <= 1.0:
            raise ValueError(f"prediction score must be within [0, 1]: task {prediction.get('task')} has {score}")
        return self._json("POST", "/api/predictions/", json=prediction)

    def update_prediction(self, prediction_id: int, **fields: Any) -> dict | None:
        """Change one prediction in place (``PATCH /api/predictions/{id}/``: score, cluster, result; ~0.09 s);
        None when Label Studio no longer has it."""
        score = fields.get("score")
        if score is not None and not 0.0 <= float(score) <= 1.0:
            raise ValueError(f"prediction score must be within [0, 1]: prediction {prediction_id} gets {score}")
        resp = self.request("PATCH", f"/api/predictions/{int(prediction_id)}/", ok_404=True, json=fields)
        return None if resp is None else resp.json()

    def list_predictions(self, *, task: int | None = None, project: int | None = None) -> list[dict]:
        """Predictions of one task or one project (``GET /api/predictions/``)."""
        params = {k: v for k, v in (("task", task), ("project", project)) if v is not None}
        if not params:
            raise ValueError("give task or project")
        return self._json("GET", "/api/predictions/", params=params, timeout=self._bulk_timeout())

    def _bulk_timeout(self) -> float | tuple[float, float]:
        """The timeout of requests whose cost grows with the project (bulk imports, whole listings)."""
        if isinstance(self._timeout, tuple):
            return (self._timeout[0], max(self._timeout[1], _BULK_READ_S))
        return max(self._timeout, _BULK_READ_S)

    def list_model_versions(self, pid: int) -> dict:
        """Model versions of the project's predictions with their counts: ``{version: count}``."""
        return self._json("GET", f"/api/projects/{pid}/model-versions/")

    def delete_model_version(self, pid: int, version: str) -> int:
        """Delete every prediction of ``version`` (slow: ~280 per second); returns how many."""
        body = self._json("DELETE", f"/api/projects/{pid}/model-versions/", json={"model_version": version})
        if isinstance(body, dict):
            deleted: Any = body.get("deleted_predictions", body.get("deleted", 0))
            return int(deleted)
        return int(body or 0)

    # ------------------------------------------------------------------ views

    def list_views(self, pid: int) -> list[dict]:
        """Data Manager tabs of the project (``GET /api/dm/views/``)."""
        return self._json("GET", "/api/dm/views/", params={"project": pid})

    def ensure_view(self, pid: int, title: str, *, ordering: list[str], filters: dict | None = None) -> dict:
        """Create the Data Manager tab ``title``, or update its ordering and filters if it exists."""
        filters = filters or {"conjunction": "and", "items": []}
        for view in self.list_views(pid):
            data = view.get("data") or {}
            if data.get("title") == title:
                keep = {k: v for k, v in data.items() if k not in ("filters", "ordering", "selectedItems")}
                body = {"project": pid, "data": {**keep, "title": title, "ordering": ordering, "filters": filters}}
                return self._json("PATCH", f"/api/dm/views/{view['id']}/", json=body)
        body = {"project": pid, "data": {"title": title, "ordering": ordering, "filters": filters}}
        return self._json("POST", "/api/dm/views/", json=body)

    # ------------------------------------------------------------- ML backends

    def add_ml_backend(self, pid: int, url: str, title: str, **fields: Any) -> dict:
        """Connect an ML backend to the project (``POST /api/ml/``)."""
        return self._json("POST", "/api/ml/", json={"project": pid, "url": url, "title": title, **fields})

    def list_ml_backends(self, pid: int) -> list[dict]:
        """ML backends connected to the project."""
        return self._json("GET", "/api/ml/", params={"project": pid})

    def train_ml_backend(self, ml_id: int) -> None:
        """Ask Label Studio to send START_TRAINING to the backend (``POST /api/ml/{id}/train``)."""
        self._json("POST", f"/api/ml/{ml_id}/train")

    # ------------------------------------------------------------ annotations

    def create_annotation(self, task_id: int, result: list[dict], **fields: Any) -> dict:
        """Create an annotation on a task (``POST /api/tasks/{id}/annotations/``)."""
        return self._json("POST", f"/api/tasks/{task_id}/annotations/", json={"result": result, **fields})

    def list_annotations(self, task_id: int) -> list[dict]:
        """Annotations of a task."""
        return self._json("GET", f"/api/tasks/{task_id}/annotations/")

    # --------------------------------------------------------------- webhooks

    def list_webhooks(self, pid: int) -> list[dict]:
        """Webhooks of the project (``GET /api/webhooks/``)."""
        return self._json("GET", "/api/webhooks/", params={"project": pid})

    def create_webhook(self, pid: int, url: str, *, headers: Mapping[str, str] | None = None) -> dict:
        """Create a project webhook sent for all actions (``POST /api/webhooks/``)."""
        body = {
            "project": pid,
            "url": url,
            "send_for_all_actions": True,
            "send_payload": True,
            "is_active": True,
            "headers": dict(headers or {}),
        }
        return self._json("POST", "/api/webhooks/", json=body)

    def update_webhook(self, webhook_id: int, **fields: Any) -> dict:
        """Change a webhook, e.g. its extra ``headers`` (``PATCH /api/webhooks/{id}/``)."""
        return self._json("PATCH", f"/api/webhooks/{webhook_id}/", json=fields)

    # ---------------------------------------------------------------- storage

    def add_local_storage(self, pid: int, path: str, *, sync: bool = True, **fields: Any) -> dict:
        """Connect a Local Files storage at ``path`` (a sub-directory of Label Studio's
        LOCAL_FILES_DOCUMENT_ROOT) and, with ``sync``, import its files as tasks."""
        body = {"project": pid, "path": str(path), "use_blob_urls": True, **fields}
        storage = self._json("POST", "/api/storages/localfiles/", json=body)
        if sync:
            synced = self._json("POST", f"/api/storages/localfiles/{storage['id']}/sync")
            storage = synced if isinstance(synced, dict) else storage
        return storage

    # --------------------------------------------------------------- download

    def download(self, uri: str, *, task_id: int | None = None) -> bytes:
        """Fetch the bytes of an image referenced by a task.

        Accepted: Label Studio's data paths ``/data/upload/...``, ``/data/local-files/?d=...`` (with
        the API key; other Label Studio paths, such as its API, are refused); http(s) URLs on the Label
        Studio origin (the key only for its data paths) or on ``allowed_hosts`` (without it); cloud URIs (``s3://``, ``gs://``, ``azure-blob://``) through
        Label Studio's ``/tasks/{task_id}/presign/`` resolver. Anything else raises `LabelStudioError`
        before any network call. At most ``max_image_bytes`` are read.
        """
        where = f"task {task_id}" if task_id is not None else "task ?"
        if not isinstance(uri, str) or not uri.strip():
            raise LabelStudioError(f"{where}: image reference is empty or not a string: {uri!r}")
        uri = uri.strip()
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme in _DEFAULT_PORTS and _origin(uri) in self._aliases:
            uri = urlunsplit(("", "", parts.path or "/", parts.query, ""))  # a path on Label Studio
        if uri.startswith("/") and not uri.startswith("//"):
            base = urlsplit(self.url).path.rstrip("/")  # Label Studio under a sub-path writes it into its links
            url = (self.url[: len(self.url.rstrip("/")) - len(base)] if uri.startswith(base + "/") else self.url) + uri
        elif scheme in _CLOUD_SCHEMES:
            if task_id is None:
                raise LabelStudioError(
                    f"{where}: {uri} is a cloud URI; pass task_id to resolve it through Label Studio"
                )
            fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
            url = f"{self.url}/tasks/{task_id}/presign/?fileuri={fileuri}"
        elif scheme in _DEFAULT_PORTS and (self._is_ls(uri) or self._host_allowed(uri)):
            url = uri
        elif scheme in _DEFAULT_PORTS:
            host = urlsplit(uri).netloc
            raise LabelStudioError(
                f"{where}: refusing to download {_display(uri)}: host {host!r} is neither Label Studio "
                f"({urlsplit(self.url).netloc}) nor an allowed host; add it to ALLOWED_HOSTS to allow it"
            )
        else:
            raise LabelStudioError(
                f"{where}: cannot download {_display(uri)!r}: only Label Studio paths (/data/...), "
                f"http(s) URLs and {', '.join(s + '://' for s in _CLOUD_SCHEMES)} URIs are supported"
            )
        if self._is_ls(url) and not self._is_ls_data(url):
            raise LabelStudioError(
                f"{where}: refusing {_display(uri)!r}: not a Label Studio data path (/data/upload/…, "
                "/data/local-files/?d=…); the task's image reference must name the image itself"
            )
        return self._fetch(url, where, uri)

    def _fetch(self, url: str, where: str, uri: str) -> bytes:
        """GET with redirects followed by hand: the key goes only to Label Studio; Label Studio's own
        redirects (presigned URLs) are followed anywhere, other hosts' only to Label Studio or
        ``allowed_hosts``. Errors name the task and the URI."""
        try:
            return self._fetch_hops(url, uri, time.monotonic())
        except LabelStudioError as exc:
            raise LabelStudioError(f"{where}: {exc}", status=exc.status) from None

    def _fetch_hops(self, url: str, uri: str, started: float) -> bytes:
        what = _display(uri)
        trusted = True  # no hop came from another host: after one, Label Studio's key is never sent again
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_deadline(started, what, url)
            auth = trusted and self._is_ls_data(url)
            resp = self._send("GET", url, what, auth=auth, stream=True, allow_redirects=False)
            try:
                if resp.is_redirect:
                    target = urljoin(url, resp.headers["Location"])
                    if urlsplit(target).scheme.lower() not in _DEFAULT_PORTS:
                        raise LabelStudioError(f"GET {what}: redirect to a non-http(s) URL refused")
                    if not (self._is_ls(url) or self._is_ls(target) or self._host_allowed(target)):
                        raise LabelStudioError(
                            f"GET {what}: redirect to {_display(target)} refused (host not in ALLOWED_HOSTS)"
                        )
                    trusted = trusted and self._is_ls(url)
                    url = target
                    what = f"{_display(uri)} (redirected to {_display(url)})"
                    continue
                if not resp.ok:
                    hint = ""
                    if resp.status_code == 404 and "/data/local-files" in uri:
                        hint = "is a Local Files storage covering this path connected to the project?"
                    elif resp.status_code == 403 and "/data/local-files" in uri:
                        hint = "Label Studio needs LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
                    elif resp.status_code == 404 and "/presign/" in url:
                        hint = "no import storage of the project resolves this URI"
                    raise self._error("GET", what, resp, hint)
                return self._read_capped(resp, what, started, url)
            finally:
                resp.close()
        raise LabelStudioError(f"GET {_display(uri)}: more than {_MAX_REDIRECTS} redirects")

    def _check_deadline(self, started: float, what: str, url: str) -> None:
        if self.download_deadline is not None and time.monotonic() - started > self.download_deadline:
            raise LabelStudioError(
                f"GET {what}: no complete answer within {self.download_deadline:g} s from {urlsplit(url).netloc}"
            )

    def _read_capped(self, resp: requests.Response, what: str, started: float, url: str) -> bytes:
        cap = self.max_image_bytes
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            raise LabelStudioError(f"GET {what}: {int(length)} bytes is over the {cap}-byte limit (max_image_bytes)")
        buf = bytearray()
        try:
            for chunk in resp.iter_content(_CHUNK):
                self._check_deadline(started, what, url)
                buf += chunk
                if len(buf) > cap:
                    raise LabelStudioError(f"GET {what}: over the {cap}-byte limit (max_image_bytes)")
        except requests.RequestException as exc:
            raise self._unreachable("GET", what, exc, url) from None
        return bytes(buf)
