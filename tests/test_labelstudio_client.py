"""`backend.labelstudio.LabelStudio` against a real Label Studio 1.23.2 (see tests/lsserver.py).

Tests marked e2e share one server for the session; each makes its own project. The others
(download refusals, allowed hosts, redirects) use a small local HTTP server and no Label Studio.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data as skdata

from backend.labelstudio import LabelStudio, LabelStudioError
from tests.lsserver import LabelStudioServer, free_port

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="finding" toName="image">
    <Choice value="normal"/><Choice value="abnormal"/>
  </Choices>
</View>"""


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def ihc_png() -> bytes:
    """A real microscopy image (immunohistochemistry, 512x512 RGB) as PNG bytes."""
    return _png(skdata.immunohistochemistry())


@pytest.fixture
def ls(label_studio: LabelStudioServer) -> Iterator[LabelStudio]:
    with LabelStudio(label_studio.url, label_studio.token) as client:
        yield client


@pytest.fixture
def project(ls: LabelStudio, request: pytest.FixtureRequest) -> int:
    return ls.create_project(f"test {request.node.name}"[:50], LABEL_CONFIG)["id"]


# ----------------------------------------------------------------------------- a tiny web server


class _Web:
    """A local HTTP server whose routes are ``path -> (status, headers, body)``; records requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                web.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload = web.routes.get(self.path.split("?")[0], (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json(self, path: str, obj: object) -> None:
        self.routes[path] = (200, {"Content-Type": "application/json"}, json.dumps(obj).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web() -> Iterator[_Web]:
    w = _Web()
    yield w
    w.close()


# ----------------------------------------------------------------------------------- auth


@pytest.mark.e2e
def test_legacy_token(label_studio: LabelStudioServer, ls: LabelStudio) -> None:
    assert ls.health()
    assert ls.auth_kind == "legacy token"
    assert ls.whoami()["email"] == label_studio.username
    assert label_studio.token not in repr(ls)


@pytest.mark.e2e
def test_personal_access_token_and_refresh_on_401(label_studio: LabelStudioServer) -> None:
    pat = label_studio.personal_access_token()
    client = LabelStudio(label_studio.url, pat)
    assert client.auth_kind == "personal access token"
    assert pat not in repr(client)
    assert client.whoami()["email"] == label_studio.username
    # A raw PAT is not a valid bearer token: the client exchanges it at /api/token/refresh/.
    raw = requests.get(f"{label_studio.url}/api/projects/", headers={"Authorization": f"Bearer {pat}"}, timeout=10)
    assert raw.status_code == 401
    # An access token that stopped working (expired) is replaced once, transparently.
    client._access = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.expired"
    assert client.whoami()["email"] == label_studio.username
    assert client._access and client._access.count(".") == 2 and "expired" not in client._access


@pytest.mark.e2e
def test_wrong_tokens_give_clear_errors(label_studio: LabelStudioServer, project: int) -> None:
    wrong = "0123456789abcdef" * 2 + "01234567"
    with pytest.raises(LabelStudioError) as err:
        LabelStudio(label_studio.url, wrong).get_project(project)
    assert err.value.status == 401
    assert f"GET /api/projects/{project}/" in str(err.value) and "API key" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value)

    pat = label_studio.personal_access_token()
    forged = pat[:-4] + ("AAAA" if not pat.endswith("AAAA") else "BBBB")
    with pytest.raises(LabelStudioError) as err:
        LabelStudio(label_studio.url, forged).get_project(project)
    assert err.value.status == 401 and "personal access token" in str(err.value)
    assert forged not in str(err.value) and pat not in str(err.value)


def test_unreachable_server_is_a_label_studio_error() -> None:
    client = LabelStudio(f"http://127.0.0.1:{free_port()}", "a" * 40, retries=1, backoff=0, timeout=2)
    assert client.health() is False
    with pytest.raises(LabelStudioError, match=r"GET /api/projects/1/: connection failed"):
        client.get_project(1)


def test_retries_5xx_but_not_4xx(web: _Web) -> None:
    web.routes["/api/projects/1/"] = (502, {}, b"bad gateway")
    web.routes["/api/projects/2/"] = (400, {"Content-Type": "application/json"}, b'{"detail": "nope"}')
    client = LabelStudio(web.url, "a" * 40, retries=2, backoff=0)
    with pytest.raises(LabelStudioError) as err:
        client.get_project(1)
    assert err.value.status == 502
    assert sum(p == "/api/projects/1/" for _, p, _, _ in web.requests) == 3
    with pytest.raises(LabelStudioError, match="400: nope"):
        client.get_project(2)
    assert sum(p == "/api/projects/2/" for _, p, _, _ in web.requests) == 1


# ---------------------------------------------------------------------------------- tasks


@pytest.mark.e2e
def test_iter_tasks_pages_through_all_tasks_once(ls: LabelStudio, project: int) -> None:
    ids = ls.import_tasks(project, [{"image": f"/data/upload/x/{i}.png"} for i in range(2500)])
    assert isinstance(ids, list) and len(ids) == 2500
    got = [t["id"] for t in ls.iter_tasks(project, page_size=300)]
    assert sorted(got) == sorted(ids) and len(set(got)) == 2500
    # A page size that divides the count exactly: the walk stops at `total`.
    assert len(list(ls.iter_tasks(project, page_size=500))) == 2500
    # Label Studio answers 404 past the last page (iter_tasks treats it as the end).
    past = ls.request("GET", "/api/tasks/", params={"project": project, "page": 6, "page_size": 500}, ok_404=True)
    assert past is None
    assert ls.get_task(ids[0])["data"]["image"] == "/data/upload/x/0.png"


@pytest.mark.e2e
def test_predictions_in_batches_order_tasks_by_score(ls: LabelStudio, project: int) -> None:
    ids = ls.import_tasks(project, [{"image": f"/data/upload/x/{i}.png"} for i in range(40)])
    rng = np.random.default_rng(0)
    scores = dict(zip(ids, rng.random(len(ids)).round(6).tolist()))
    preds = [{"task": t, "model_version": "examine-1", "score": s, "result": []} for t, s in scores.items()]
    assert ls.import_predictions(project, preds, batch_size=7) == 40
    assert ls.list_model_versions(project) == {"examine-1": 40}
    assert [p["score"] for p in ls.list_predictions(task=ids[3])] == [scores[ids[3]]]

    # The Data Manager's score column follows project.model_version.
    assert ls.update_project(project, model_version="examine-1")["model_version"] == "examine-1"
    query = {"ordering": ["tasks:predictions_score"]}
    ordered = list(ls.iter_tasks(project, fields="all", page_size=15, query=query))
    assert [t["id"] for t in ordered] == sorted(ids, key=scores.__getitem__)
    assert ordered[0]["predictions_score"] == pytest.approx(min(scores.values()))
    desc = [t["id"] for t in ls.iter_tasks(project, fields="all", query={"ordering": ["-tasks:predictions_score"]})]
    assert desc == sorted(ids, key=scores.__getitem__, reverse=True)

    # Label Studio 1.23 would silently drop a score outside [0, 1]: the client refuses it.
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ls.import_predictions(project, [{"task": ids[0], "model_version": "x", "score": 1.5, "result": []}])
    assert ls.delete_model_version(project, "examine-1") == 40
    assert ls.list_model_versions(project) == {}


@pytest.mark.e2e
def test_ensure_view_creates_then_updates_and_drives_next_task(ls: LabelStudio, project: int) -> None:
    ids = ls.import_tasks(project, [{"image": f"/data/upload/x/{i}.png"} for i in range(6)])
    scores = [0.6, 0.2, 0.9, 0.05, 0.4, 0.7]
    preds = [{"task": t, "model_version": "v", "score": s, "result": []} for t, s in zip(ids, scores)]
    ls.import_predictions(project, preds)
    ls.update_project(project, model_version="v", sampling="Sequential sampling")

    first = ls.ensure_view(project, "EXAMINE", ordering=["-tasks:predictions_score"])
    assert first["data"]["ordering"] == ["-tasks:predictions_score"]
    second = ls.ensure_view(project, "EXAMINE", ordering=["tasks:predictions_score"])
    assert second["id"] == first["id"] and second["data"]["ordering"] == ["tasks:predictions_score"]
    views = [v for v in ls.list_views(project) if v["data"].get("title") == "EXAMINE"]
    assert len(views) == 1 and views[0]["data"]["ordering"] == ["tasks:predictions_score"]

    # Sequential sampling follows the view's ordering: the lowest score comes first.
    task = ls.next_task(project, view=first["id"])
    assert task is not None and task["id"] == ids[3]
    assert ls.next_task(project) is not None


@pytest.mark.e2e
def test_next_task_of_empty_project_is_none(ls: LabelStudio, project: int) -> None:
    assert ls.next_task(project) is None


@pytest.mark.e2e
def test_annotations(ls: LabelStudio, project: int) -> None:
    (tid,) = ls.import_tasks(project, [{"image": "/data/upload/x/0.png"}])
    result = [{"from_name": "finding", "to_name": "image", "type": "choices", "value": {"choices": ["normal"]}}]
    ann = ls.create_annotation(tid, result, lead_time=1.5)
    assert ann["task"] == tid and ann["result"][0]["value"] == {"choices": ["normal"]}
    assert [a["id"] for a in ls.list_annotations(tid)] == [ann["id"]]


@pytest.mark.e2e
def test_ml_backend_connect_and_train(ls: LabelStudio, project: int, web: _Web) -> None:
    web.json("/health", {"status": "UP", "model_class": "Examine"})
    web.json("/setup", {"model_version": "examine-0"})
    web.json("/webhook", {"status": "ok"})
    ml = ls.add_ml_backend(project, web.url, "examine")
    assert ml["title"] == "examine" and ml["project"] == project
    assert [m["id"] for m in ls.list_ml_backends(project)] == [ml["id"]]
    ls.train_ml_backend(ml["id"])
    events = [json.loads(b).get("action") for m, p, _, b in web.requests if p == "/webhook" and b]
    assert "START_TRAINING" in events


# ------------------------------------------------------------------------------- download


@pytest.mark.e2e
def test_download_uploaded_image(
    label_studio: LabelStudioServer, ls: LabelStudio, project: int, ihc_png: bytes
) -> None:
    (tid,) = ls.import_files(project, {"ihc.png": ihc_png})
    uri = ls.get_task(tid)["data"]["image"]
    assert uri.startswith(f"/data/upload/{project}/")
    data = ls.download(uri, task_id=tid)
    assert data == ihc_png
    assert np.asarray(Image.open(io.BytesIO(data))).shape == (512, 512, 3)
    # The same file through an alias of the Label Studio URL (its LABEL_STUDIO_HOST as seen in tasks).
    alias = LabelStudio(label_studio.url, label_studio.token, aliases=["http://labelstudio.invalid:8080"])
    assert alias.download(f"http://labelstudio.invalid:8080{uri}", task_id=tid) == ihc_png
    # Without auth the file is refused; a too-small cap stops the stream.
    assert requests.get(label_studio.url + uri, timeout=10).status_code in (401, 403)
    small = LabelStudio(label_studio.url, label_studio.token, max_image_bytes=10_000)
    with pytest.raises(LabelStudioError, match="max_image_bytes"):
        small.download(uri, task_id=tid)


@pytest.mark.e2e
def test_download_local_files(label_studio: LabelStudioServer, ls: LabelStudio, project: int) -> None:
    folder = label_studio.files_root / f"p{project}"
    folder.mkdir()
    crop = skdata.immunohistochemistry()[100:228, 200:328]
    (folder / "crop.png").write_bytes(_png(crop))
    storage = ls.add_local_storage(project, str(folder))
    assert storage["id"] and storage.get("last_sync_count") == 1
    (task,) = list(ls.iter_tasks(project))
    uri = task["data"]["image"]
    assert f"/data/local-files/?d=p{project}/crop.png" in uri
    data = ls.download(uri, task_id=task["id"])
    assert data == (folder / "crop.png").read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), crop)
    # A path no storage covers: 404 with a hint.
    expected = r"task 7: GET /data/local-files/\?d=elsewhere/x.png -> 404.*Local Files storage"
    with pytest.raises(LabelStudioError, match=expected):
        ls.download("/data/local-files/?d=elsewhere/x.png", task_id=7)


@pytest.mark.e2e
def test_cloud_uri_goes_through_presign(label_studio: LabelStudioServer, ls: LabelStudio, project: int) -> None:
    (tid,) = ls.import_tasks(project, [{"image": "s3://bucket/scan.png"}])
    # The resolver exists: without `fileuri` it answers 400 (an unknown route would be 404).
    auth = {"Authorization": f"Token {label_studio.token}"}
    bare = requests.get(f"{label_studio.url}/tasks/{tid}/presign/", headers=auth, timeout=10)
    assert bare.status_code == 400
    with pytest.raises(LabelStudioError, match=rf"task {tid}: GET s3://bucket/scan.png -> 404.*no import storage"):
        ls.download("s3://bucket/scan.png", task_id=tid)
    with pytest.raises(LabelStudioError, match="pass task_id"):
        ls.download("gs://bucket/scan.png")


class _NoNetwork(requests.adapters.BaseAdapter):
    def send(self, *args: object, **kwargs: object) -> requests.Response:
        raise AssertionError("the client made a network call")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("https://images.example.org/scan.png?X-Sig=secret", "images.example.org.*ALLOWED_HOSTS"),
        ("http://10.0.0.1/latest/meta-data", "10.0.0.1.*ALLOWED_HOSTS"),
        ("file:///etc/passwd", "cannot download"),
        ("ftp://example.org/x.png", "cannot download"),
        ("scan.png", "cannot download"),
        ("", "empty"),
    ],
)
def test_download_refuses_without_network_call(uri: str, match: str) -> None:
    client = LabelStudio("http://ls.invalid:8080", "b" * 40, allowed_hosts=["cdn.example.org"])
    client.session.mount("http://", _NoNetwork())
    client.session.mount("https://", _NoNetwork())
    with pytest.raises(LabelStudioError, match=match) as err:
        client.download(uri, task_id=42)
    assert "task 42" in str(err.value) and "secret" not in str(err.value) and "b" * 40 not in str(err.value)


def test_allowed_host_gets_no_token_and_redirects_are_checked(web: _Web, ihc_png: bytes) -> None:
    token = "c" * 40
    other = _Web()
    try:
        web.routes["/img.png"] = (200, {"Content-Type": "image/png"}, ihc_png)
        web.routes["/to-other"] = (302, {"Location": f"http://localhost:{other.port}/img.png"}, b"")
        web.routes["/to-ls"] = (302, {"Location": f"{other.url}/data/upload/1/img.png"}, b"")
        other.routes["/data/upload/1/img.png"] = (200, {}, ihc_png)
        other.routes["/img.png"] = (200, {}, ihc_png)
        # `other` plays Label Studio; `web` is an allowed image host.
        client = LabelStudio(other.url, token, allowed_hosts=[f"127.0.0.1:{web.port}"])
        assert client.download(f"{web.url}/img.png", task_id=1) == ihc_png
        assert all("Authorization" not in h for _, _, h, _ in web.requests)
        with pytest.raises(LabelStudioError, match="redirect to .* refused"):
            client.download(f"{web.url}/to-other", task_id=1)
        assert not any(p == "/img.png" for _, p, _, _ in other.requests)
        # A redirect from another host to Label Studio is followed without the key: task data never selects
        # an authenticated call.
        assert client.download(f"{web.url}/to-ls", task_id=1) == ihc_png
        assert "Authorization" not in other.requests[-1][2]
        assert all("Authorization" not in h for _, _, h, _ in web.requests)
    finally:
        other.close()


@pytest.mark.parametrize(
    "ref",
    [
        "/api/current-user/whoami",
        "/api/projects/1/",
        "/data/../api/current-user/whoami",
        "/data/%2e%2e/api/projects",
        "/user/account",
        "/api/tasks/5/resolve/",
        "/tasks/5/presign/../../api/tasks",
    ],
)
def test_task_data_never_selects_an_api_call(web: _Web, ref: str) -> None:
    client = LabelStudio(web.url, "e" * 40)
    for uri in (ref, web.url + ref):
        with pytest.raises(LabelStudioError, match="not a Label Studio data path"):
            client.download(uri, task_id=3)
    assert web.requests == []  # refused before any request


def test_label_studio_redirect_to_its_api_gets_no_key(web: _Web, ihc_png: bytes) -> None:
    web.routes["/data/upload/1/a.png"] = (302, {"Location": "/api/current-user/whoami"}, b"")
    web.routes["/api/current-user/whoami"] = (200, {}, ihc_png)
    client = LabelStudio(web.url, "f" * 40)
    client.download("/data/upload/1/a.png", task_id=1)
    assert web.requests[0][2]["Authorization"] == "Token " + "f" * 40
    assert "Authorization" not in web.requests[1][2]


def test_label_studio_redirects_are_followed_without_the_token(web: _Web, ihc_png: bytes) -> None:
    """A presigned-URL redirect from Label Studio leads to a cloud host that must not see the key."""
    token = "d" * 40
    cloud = _Web()
    try:
        cloud.routes["/bucket/scan.png"] = (200, {}, ihc_png)
        presigned = f"http://localhost:{cloud.port}/bucket/scan.png?sig=1"
        web.routes["/tasks/5/presign/"] = (303, {"Location": presigned}, b"")
        client = LabelStudio(web.url, token)
        assert client.download("s3://bucket/scan.png", task_id=5) == ihc_png
        method, path, headers, _ = web.requests[-1]
        assert path.startswith("/tasks/5/presign/?fileuri=") and headers["Authorization"] == f"Token {token}"
        assert "Authorization" not in cloud.requests[-1][2]
    finally:
        cloud.close()


@pytest.mark.parametrize(
    "ref",
    [
        "/tasks/5/resolve/?fileuri=czM6Ly9i",
        "/projects/2/presign/?fileuri=czM6Ly9i",
        "/storage-data/uploaded/?filepath=a.png",
    ],
)
def test_label_studio_storage_proxies_are_data_paths(web: _Web, ihc_png: bytes, ref: str) -> None:
    web.routes[ref.split("?")[0]] = (200, {}, ihc_png)
    client = LabelStudio(web.url, "g" * 40)
    assert client.download(ref, task_id=5) == ihc_png
    assert web.requests[-1][2]["Authorization"] == "Token " + "g" * 40


def test_links_that_carry_label_studio_s_sub_path_are_not_prefixed_twice(web: _Web, ihc_png: bytes) -> None:
    web.routes["/ls/data/upload/1/a.png"] = (200, {}, ihc_png)
    client = LabelStudio(web.url + "/ls", "h" * 40)
    assert client.download("/ls/data/upload/1/a.png", task_id=1) == ihc_png
    assert client.download("/data/upload/1/a.png", task_id=1) == ihc_png
    assert [p for _, p, _, _ in web.requests] == ["/ls/data/upload/1/a.png"] * 2
