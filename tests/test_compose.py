"""Static checks of the deployment files: docker-compose.yml, backend/Dockerfile and .dockerignore.

No Docker engine is needed (none exists on the development machines). The compose file is validated against the
official Compose Specification JSON schema, vendored as tests/data/compose-spec.json from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6.
The other checks encode what the deployment needs to work with Label Studio 1.23 (see docs/label-studio.md in the
project notes): the backend reachable on the private network, local files served, legacy tokens on, one worker,
Label Studio's database in PostgreSQL (its POSTGRE_* settings, a health-checked service it waits for, a named volume,
no published port, no password in the file).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "backend" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

LS_SERVICE = "label-studio"
PG_SERVICE = "postgres"
GPU_SERVICE = "examine"
CPU_SERVICE = "examine-cpu"
BACKEND_SERVICES = (GPU_SERVICE, CPU_SERVICE)
BACKEND_PORT = 9090
LS_PORT = 8080
PG_PORT = 5432
PG_DATA = "/var/lib/postgresql/data"

# The backend's settings (backend/settings). Every one is declared in each backend service; those in
# REQUIRED_SETTINGS need a value, the others may be left to pass through from .env (a key with no value).
BACKEND_SETTINGS = {
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_API_KEY",
    "MODEL_DIR",
    "HOST",
    "PORT",
    "WORKERS",
    "THREADS",
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
    "LOG_LEVEL",
    "EXAMINE_MODEL",
    "EXAMINE_WEIGHTS",
    "EXAMINE_DEVICE",
    "EXAMINE_SAMPLING",
    "EXAMINE_POLICY",
    "ALLOWED_HOSTS",
    "EXAMINE_DATA_ROOTS",
}
OPTIONAL_SETTINGS = {
    "EXAMINE_MODEL",
    "EXAMINE_WEIGHTS",
    "EXAMINE_POLICY",
    "ALLOWED_HOSTS",
}
REQUIRED_SETTINGS = BACKEND_SETTINGS - OPTIONAL_SETTINGS

# The variables an admin must put in .env; everything else has a default.
ADMIN_SECRETS = {
    "LABEL_STUDIO_PASSWORD": "not-a-real-password",
    "LABEL_STUDIO_USER_TOKEN": "0" * 40,
    "BASIC_AUTH_PASS": "not-a-real-backend-password",
    "POSTGRES_PASSWORD": "not-a-real-database-password",
}

# Environment keys whose values are credentials and so must never be literals in the file.
SECRET_KEY = re.compile(r"PASSWORD|PASS$|TOKEN|API_KEY|SECRET|DSN")


# --------------------------------------------------------------------------------------------- helpers


class MissingVariable(Exception):
    """A `${VAR:?message}` / `${VAR?message}` whose variable is missing."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate_braced(text: str, start: int, env: dict[str, str]) -> tuple[str, int]:
    """Expand the `${...}` whose body starts at text[start]; return (value, index after the closing brace).

    Implements the Compose interpolation rules: ${V}, ${V-d}, ${V:-d}, ${V?m}, ${V:?m}, ${V+r}, ${V:+r},
    with the word (d, m, r) itself interpolated, so nesting such as ${A:-${B:?m}} works.
    """
    match = _NAME.match(text, start)
    if not match:
        raise ValueError(f"invalid interpolation at {text[start - 2 : start + 20]!r}")
    name, i = match.group(), match.end()
    operator = ""
    for candidate in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(candidate, i):
            operator, i = candidate, i + len(candidate)
            break
    # The word runs to the matching closing brace. Nested ${...} are only located here and expanded in word(),
    # so that a default is evaluated (and its own `:?` raised) only when it is used, as Compose does.
    word_parts: list[tuple[str, int, int]] = []  # ("lit", start, end) or ("var", body_start, 0)
    literal_start = i
    while True:
        if i >= len(text):
            raise ValueError(f"unterminated interpolation in {text!r}")
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            word_parts += [("lit", literal_start, i), ("var", i + 2, 0)]
            i = _skip(text, i + 2)
            literal_start = i
        elif text[i] == "}":
            word_parts.append(("lit", literal_start, i))
            end = i + 1
            break
        else:
            i += 1

    def word() -> str:
        out = []
        for kind, a, b in word_parts:
            if kind == "lit":
                out.append(text[a:b].replace("$$", "$"))
            else:
                out.append(_interpolate_braced(text, a, env)[0])
        return "".join(out)

    value = env.get(name)
    if operator == "":
        return value or "", end
    if operator in (":-", "-"):
        use_default = value is None or (operator == ":-" and value == "")
        return (word() if use_default else value), end
    if operator in (":?", "?"):
        missing = value is None or (operator == ":?" and value == "")
        if missing:
            raise MissingVariable(f"{name}: {word()}")
        return value, end
    # :+ and +: the replacement when set
    is_set = value is not None and (operator == "+" or value != "")
    return (word() if is_set else ""), end


def _skip(text: str, start: int) -> int:
    """Index after the `}` closing the `${` whose body starts at text[start] (braces nest)."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unterminated interpolation in {text!r}")


def interpolate(value, env: dict[str, str]):
    """Apply Compose variable interpolation to every string in a parsed compose document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            expanded, i = _interpolate_braced(value, i + 2, env)
            out.append(expanded)
        elif value[i] == "$" and _NAME.match(value, i + 1):
            name = _NAME.match(value, i + 1)
            out.append(env.get(name.group(), ""))
            i = name.end()
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def environment(service: dict) -> dict[str, str | None]:
    """A service's environment as a dict, whichever of the two Compose forms (list or mapping) it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def volume_mounts(service: dict) -> list[dict]:
    """Volumes of a service as dicts with source, target and read_only (short syntax is converted)."""
    mounts = []
    for item in service.get("volumes", []):
        if isinstance(item, dict):
            mounts.append(
                {"source": item.get("source"), "target": item["target"], "read_only": bool(item.get("read_only"))}
            )
            continue
        parts = item.split(":")
        # A Windows drive letter never occurs here; the short form is SOURCE:TARGET[:MODE] or TARGET.
        if len(parts) == 1:
            mounts.append({"source": None, "target": parts[0], "read_only": False})
        else:
            modes = parts[2].split(",") if len(parts) > 2 else []
            mounts.append({"source": parts[0], "target": parts[1], "read_only": "ro" in modes})
    return mounts


def container_ports(service: dict) -> list[tuple[str | None, str | None, int]]:
    """(host_ip, published, target) of each published port; the short syntax is parsed."""
    result = []
    for item in service.get("ports", []):
        if isinstance(item, dict):
            result.append((item.get("host_ip"), str(item.get("published")), int(item["target"])))
            continue
        parts = str(item).split(":")
        target = int(parts[-1].split("/")[0])
        published = parts[-2] if len(parts) >= 2 else None
        host_ip = parts[-3] if len(parts) >= 3 else None
        result.append((host_ip, published, target))
    return result


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined, heredoc bodies skipped."""
    instructions: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):  # comment lines inside a continuation are removed by Docker
                continue
            line = line.rstrip()[:-1] + " " + nxt.strip()
        keyword, _, args = line.strip().partition(" ")
        heredoc = re.search(r"<<-?['\"]?([A-Za-z_]+)['\"]?", args)
        if heredoc:
            # Skip the body up to the terminator line.
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `path` or a folder above it (enough of Docker's matcher for these files)."""
    parts = path.rstrip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        globs = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes for glob in globs):
            excluded = not negate
    return excluded


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict:
    """The compose file as Compose would see it with only the two mandatory secrets in .env."""
    return interpolate(raw_compose, dict(ADMIN_SECRETS))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


# --------------------------------------------------------------------------------------------- compose file


def test_interpolation_helper_follows_the_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}-$SET", env) == "x--x"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d d  d"
    assert interpolate("${UNSET:-${SET}} ${UNSET:-${ALSO:-deep}}", env) == "x deep"
    assert interpolate("${SET:+r} ${EMPTY:+r}|${EMPTY+r}", env) == "r |r"
    assert interpolate("$${NOT} a $$1", env) == "${NOT} a $1"
    with pytest.raises(MissingVariable, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(MissingVariable, match="UNSET: set it in .env"):
        interpolate("${SET:-a}${UNSET?set it in .env}", env)
    assert interpolate("${EMPTY?fine}", env) == ""


@pytest.mark.parametrize("raw", [False, True], ids=["interpolated", "as-written"])
def test_compose_file_matches_the_official_schema(raw, raw_compose, compose):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(raw_compose if raw else compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_is_the_compose_specification():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert {"services", "volumes", "networks"} <= set(schema["properties"])


def test_mandatory_variables_fail_with_a_message_when_missing(raw_compose):
    # Without .env, Compose must refuse to start rather than use an empty password or token.
    for missing in ADMIN_SECRETS:
        env = {k: v for k, v in ADMIN_SECRETS.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            interpolate(raw_compose, env)
    # A personal access token for the backend alone is not enough: Label Studio still needs its own token.
    with pytest.raises(MissingVariable, match="LABEL_STUDIO_USER_TOKEN"):
        interpolate(
            raw_compose,
            {
                "LABEL_STUDIO_PASSWORD": "pw",
                "LABEL_STUDIO_API_KEY": "pat",
                "BASIC_AUTH_PASS": "x",
                "POSTGRES_PASSWORD": "y",
            },
        )


def test_the_backend_requires_basic_auth_by_default(services):
    for name in BACKEND_SERVICES:
        env = services[name]["environment"]
        assert env["BASIC_AUTH_USER"] == "examine" and env["BASIC_AUTH_PASS"] == ADMIN_SECRETS["BASIC_AUTH_PASS"]


def test_services_and_profiles(services):
    assert set(services) == {PG_SERVICE, LS_SERVICE, GPU_SERVICE, CPU_SERVICE}
    # `docker compose up -d` starts PostgreSQL, Label Studio and the GPU backend; the CPU backend only when asked for.
    assert not services[PG_SERVICE].get("profiles")
    assert not services[LS_SERVICE].get("profiles")
    assert not services[GPU_SERVICE].get("profiles")
    assert services[CPU_SERVICE].get("profiles") == ["cpu"]


def test_label_studio_image_is_pinned_to_1_23(services):
    assert re.fullmatch(r"heartexlabs/label-studio:1\.23\.\d+", services[LS_SERVICE]["image"])


def test_label_studio_port_and_data_volume(compose, services):
    ls = services[LS_SERVICE]
    assert any(target == LS_PORT for _, _, target in container_ports(ls))
    data = [m for m in volume_mounts(ls) if m["target"] == "/label-studio/data"]
    assert len(data) == 1 and data[0]["source"] in compose["volumes"], "Label Studio data must be a named volume"


def test_label_studio_reaches_a_backend_on_the_private_network(services):
    env = environment(services[LS_SERVICE])
    # Both guards block private addresses (the compose network) since 1.23.1: ML backends and webhooks.
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"].lower() == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"].lower() == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"].lower() == "true"


def test_label_studio_imports_predictions_without_recounting_the_project(services):
    from scripts.procs import PREDICTIONS_IMPORT_FLAG

    assert environment(services[LS_SERVICE])[PREDICTIONS_IMPORT_FLAG].lower() == "true"


def test_label_studio_serves_the_shared_local_files(services):
    ls = services[LS_SERVICE]
    env = environment(ls)
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"].lower() == "true"
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert root in {m["target"] for m in volume_mounts(ls)}


def test_label_studio_admin_and_privacy_settings(raw_compose, services):
    env = environment(services[LS_SERVICE])
    assert env["LABEL_STUDIO_USERNAME"]
    assert env["LABEL_STUDIO_PASSWORD"] == ADMIN_SECRETS["LABEL_STUDIO_PASSWORD"]
    assert env["LABEL_STUDIO_USER_TOKEN"] == ADMIN_SECRETS["LABEL_STUDIO_USER_TOKEN"]
    assert env["COLLECT_ANALYTICS"].lower() == "false"
    assert env["LATEST_VERSION_CHECK"].lower() == "false"
    raw_env = environment(raw_compose["services"][LS_SERVICE])
    assert raw_env["LABEL_STUDIO_PASSWORD"].startswith("${LABEL_STUDIO_PASSWORD:?")
    assert raw_env["LABEL_STUDIO_USER_TOKEN"].startswith("${LABEL_STUDIO_USER_TOKEN:?")


@pytest.mark.parametrize("name", BACKEND_SERVICES)
def test_backend_declares_every_setting(name, services):
    env = environment(services[name])
    missing = BACKEND_SETTINGS - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    unset = sorted(key for key in REQUIRED_SETTINGS if not env[key])
    assert not unset, f"{name} leaves {unset} without a value"
    assert env["WORKERS"] == "1", "the job queue is in-process: one gunicorn worker only"
    assert env["PORT"] == str(BACKEND_PORT)
    assert env["HOST"] == "0.0.0.0"
    assert int(env["THREADS"]) >= 2
    assert env["LABEL_STUDIO_API_KEY"] == ADMIN_SECRETS["LABEL_STUDIO_USER_TOKEN"]


@pytest.mark.parametrize("name", BACKEND_SERVICES)
def test_backend_environment_matches_the_backend_settings(name, services):
    """Every backend setting can be set through .env, no name is misspelt, and the values parse."""
    settings = pytest.importorskip("backend.settings")
    known = {f.metadata["env"] for f in dataclasses.fields(settings.Settings)}
    env = environment(services[name])
    assert BACKEND_SETTINGS <= known, f"settings missing from backend/settings.py: {sorted(BACKEND_SETTINGS - known)}"
    assert not set(env) - known, f"{name} sets unknown variables {sorted(set(env) - known)}"
    assert not known - set(env), f"{name} does not pass through {sorted(known - set(env))}"
    # Keys without a value are absent in the container; the rest must be accepted by the backend.
    parsed = settings.Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert parsed.workers == 1 and parsed.port == BACKEND_PORT


def test_backend_api_key_can_be_a_separate_personal_access_token(raw_compose):
    env = dict(ADMIN_SECRETS, LABEL_STUDIO_API_KEY="pat-for-the-backend")
    services = interpolate(raw_compose, env)["services"]
    for name in BACKEND_SERVICES:
        assert environment(services[name])["LABEL_STUDIO_API_KEY"] == "pat-for-the-backend"


@pytest.mark.parametrize("name", BACKEND_SERVICES)
def test_backend_reaches_label_studio_by_service_name(name, services):
    url = urlsplit(environment(services[name])["LABEL_STUDIO_URL"])
    assert url.scheme == "http"
    assert url.hostname == LS_SERVICE
    assert url.port == LS_PORT
    assert services[name]["depends_on"][LS_SERVICE]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", BACKEND_SERVICES)
def test_backend_state_and_shared_images(name, compose, services):
    backend, ls = services[name], services[LS_SERVICE]
    env = environment(backend)
    mounts = {m["target"]: m for m in volume_mounts(backend)}
    # MODEL_DIR on a named volume, so the embedding store survives container rebuilds.
    assert env["MODEL_DIR"] in mounts
    assert mounts[env["MODEL_DIR"]]["source"] in compose["volumes"]
    # The images Label Studio serves are the ones the backend may read: same source, same path, read-only.
    ls_root = environment(ls)["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    ls_source = {m["target"]: m["source"] for m in volume_mounts(ls)}[ls_root]
    roots = env["EXAMINE_DATA_ROOTS"].split(",")
    assert ls_root in roots
    assert mounts[ls_root]["source"] == ls_source
    assert mounts[ls_root]["read_only"]
    assert any(target == BACKEND_PORT for _, _, target in container_ports(backend))


def test_backend_variants_share_state_and_exclude_each_other(services):
    gpu, cpu = services[GPU_SERVICE], services[CPU_SERVICE]
    assert volume_mounts(gpu) == volume_mounts(cpu)
    # Same host port: the second variant cannot start while the first runs (they would share MODEL_DIR).
    assert container_ports(gpu) == container_ports(cpu)
    # Only reachable from the host itself; Label Studio uses the compose network.
    assert all(host_ip == "127.0.0.1" for host_ip, _, _ in container_ports(gpu))
    # Label Studio connects to http://examine:9090 whichever variant runs.
    assert "examine" in cpu["networks"]["default"]["aliases"]


def test_gpu_backend_reserves_an_nvidia_gpu(services):
    devices = services[GPU_SERVICE]["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpus, "the GPU service must reserve an NVIDIA GPU"
    assert gpus[0].get("count") in (1, "all") or gpus[0].get("device_ids")
    assert environment(services[GPU_SERVICE])["EXAMINE_DEVICE"] in ("cuda", "auto")


def test_cpu_backend_needs_no_gpu(services):
    cpu = services[CPU_SERVICE]
    assert "deploy" not in cpu and "gpus" not in cpu
    assert environment(cpu)["EXAMINE_DEVICE"] == "cpu"


@pytest.mark.parametrize("name,variant", [(GPU_SERVICE, "cuda"), (CPU_SERVICE, "cpu")])
def test_backends_build_from_the_dockerfile(name, variant, services):
    build = services[name]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["args"]["VARIANT"] == variant
    assert variant in services[name]["image"]


@pytest.mark.parametrize("name", [PG_SERVICE, LS_SERVICE, *BACKEND_SERVICES])
def test_every_service_has_healthcheck_and_restart_policy(name, services):
    service = services[name]
    assert service.get("restart") in ("unless-stopped", "always")
    check = service["healthcheck"]
    assert not check.get("disable")
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert check.get("start_period"), "first starts are slow (migrations, model loading)"


# --------------------------------------------------------------------------------------------- PostgreSQL


def test_postgres_image_is_pinned_to_15(services):
    # The official image by default; POSTGRES_IMAGE names a mirror's copy or docker/postgres.Dockerfile's build.
    assert services[PG_SERVICE]["image"] == "postgres:15"


def test_postgres_image_can_be_replaced(raw_compose):
    services = interpolate(raw_compose, dict(ADMIN_SECRETS, POSTGRES_IMAGE="examine/postgres:15"))["services"]
    assert services[PG_SERVICE]["image"] == "examine/postgres:15"


def test_label_studio_runs_on_the_postgres_service(services):
    ls, pg = environment(services[LS_SERVICE]), environment(services[PG_SERVICE])
    # Label Studio 1.23's settings: DJANGO_DB=default selects DATABASES_ALL["postgresql"], filled from POSTGRE_*.
    assert ls["DJANGO_DB"] == "default"
    assert ls["POSTGRE_HOST"] == PG_SERVICE and ls["POSTGRE_PORT"] == str(PG_PORT)
    assert ls["POSTGRE_NAME"] == pg["POSTGRES_DB"] == "labelstudio"
    assert ls["POSTGRE_USER"] == pg["POSTGRES_USER"] == "labelstudio"
    assert ls["POSTGRE_PASSWORD"] == pg["POSTGRES_PASSWORD"] == ADMIN_SECRETS["POSTGRES_PASSWORD"]
    # Label Studio starts once the database accepts connections (its first start runs the migrations there).
    assert services[LS_SERVICE]["depends_on"][PG_SERVICE]["condition"] == "service_healthy"


def test_database_name_and_user_follow_env(raw_compose):
    env = dict(ADMIN_SECRETS, POSTGRES_DB="ls", POSTGRES_USER="ls_owner")
    services = interpolate(raw_compose, env)["services"]
    ls, pg = environment(services[LS_SERVICE]), environment(services[PG_SERVICE])
    assert (ls["POSTGRE_NAME"], ls["POSTGRE_USER"]) == (pg["POSTGRES_DB"], pg["POSTGRES_USER"]) == ("ls", "ls_owner")


def test_postgres_password_has_no_default(raw_compose):
    for name in (PG_SERVICE, LS_SERVICE):
        key = "POSTGRES_PASSWORD" if name == PG_SERVICE else "POSTGRE_PASSWORD"
        assert environment(raw_compose["services"][name])[key].startswith("${POSTGRES_PASSWORD:?")


def test_postgres_data_on_a_named_volume(compose, services):
    data = [m for m in volume_mounts(services[PG_SERVICE]) if m["target"] == PG_DATA]
    assert len(data) == 1 and data[0]["source"] in compose["volumes"], "PostgreSQL's data must be a named volume"
    # Not shared with another service.
    others = [m["source"] for name, svc in services.items() if name != PG_SERVICE for m in volume_mounts(svc)]
    assert data[0]["source"] not in others


def test_postgres_is_not_published(services):
    # Only Label Studio connects, over the compose network; the host and the outside never need the port.
    assert not services[PG_SERVICE].get("ports")
    assert services[PG_SERVICE].get("network_mode") is None


def test_postgres_healthcheck_uses_pg_isready(services):
    check = services[PG_SERVICE]["healthcheck"]
    command = " ".join(check["test"][1:])
    assert check["test"][0] in ("CMD", "CMD-SHELL") and "pg_isready" in command
    # Over TCP: the official image's first-start init listens on a socket only, and must not count as ready.
    assert "-h 127.0.0.1" in command or "--host=127.0.0.1" in command
    # $$ escapes: the container's own POSTGRES_USER / POSTGRES_DB, not the values Compose would interpolate.
    assert "${POSTGRES_USER}" in command and "${POSTGRES_DB}" in command


def test_label_studio_healthcheck_probes_health(services):
    assert f"127.0.0.1:{LS_PORT}/health" in " ".join(services[LS_SERVICE]["healthcheck"]["test"])


def test_backend_healthcheck_uses_the_probe_shipped_in_the_image(services):
    probe = services[GPU_SERVICE]["healthcheck"]["test"][-1]
    assert probe in DOCKERFILE.read_text()
    assert "/health" in DOCKERFILE.read_text()


def test_no_secret_literals(raw_compose):
    # Credentials only ever come from variables without a literal default (or are empty).
    for name, service in raw_compose["services"].items():
        for key, value in environment(service).items():
            # Switches such as LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true are settings, not credentials.
            if not SECRET_KEY.search(key) or not value or value.lower() in ("true", "false"):
                continue
            assert value.startswith("${") and value.endswith("}"), f"{name}.{key} is a literal"
            # With nothing set, the value must be refused (`:?`) or come out empty: no fallback credential.
            try:
                fallback = interpolate(value, {})
            except MissingVariable:
                continue
            assert fallback == "", f"{name}.{key} falls back to the literal {fallback!r}"
    # Nothing that looks like a token or key anywhere in the file (comments included).
    text = COMPOSE_FILE.read_text()
    # (long runs mixing digits and lower-case letters: hex tokens, base64 keys, JWT personal access tokens)
    suspicious = [
        run
        for run in re.findall(r"[A-Za-z0-9+/_.=-]{32,}", text)
        if re.search(r"[0-9]", run) and re.search(r"[a-z]", run) and not run.startswith("fflag_")
    ]  # Label Studio's feature flags are names (fflag_<ticket>_<words>_<date>_short), not secrets
    assert not suspicious


def test_header_tells_admins_how_to_run_it():
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    for needle in (
        "docker compose up -d",
        "docker compose up -d examine-cpu",
        "http://examine:9090",
        ".env",
        "LABEL_STUDIO_PASSWORD",
        "LABEL_STUDIO_USER_TOKEN",
        "/label-studio/files/",
    ):
        assert needle in header, needle


# --------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_variants(dockerfile):
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else None for kind, a in dockerfile if kind == "ARG"}
    stages = {
        args_.split()[-1]: args_.split()[0] for kind, args_ in dockerfile if kind == "FROM" and " AS " in args_.upper()
    }
    stages = {name.lower(): image for name, image in stages.items()}
    # CUDA by default, CPU with --build-arg VARIANT=cpu.
    assert args["VARIANT"] == "cuda"
    assert stages["runtime"] == "base-${VARIANT}"
    assert stages["base-cuda"] == "${CUDA_BASE_IMAGE}" and "cuda" in args["CUDA_BASE_IMAGE"]
    assert stages["base-cpu"] == "${CPU_BASE_IMAGE}" and args["CPU_BASE_IMAGE"].startswith("python:3.11-slim")
    cpu_runs = [a for kind, a in dockerfile if kind == "RUN" and "torch" in a]
    assert any("TORCH_CPU_INDEX" in run for run in cpu_runs)
    assert args["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"


def test_dockerfile_installs_requirements_before_the_code(dockerfile):
    """Cache-friendly order: the dependency layer does not depend on the source files."""

    def index(predicate) -> int:
        return next(i for i, item in enumerate(dockerfile) if predicate(*item))

    copy_requirements = index(lambda k, a: k == "COPY" and a.split()[0] == "requirements.txt")
    install_requirements = index(lambda k, a: k == "RUN" and "pip install -r requirements.txt" in a)
    copy_code = index(lambda k, a: k == "COPY" and a.split()[0] in ("examine/", "backend/", "."))
    install_package = index(lambda k, a: k == "RUN" and re.search(r"pip install( --no-deps)? \.(\s|$)", a))
    assert copy_requirements < install_requirements < copy_code < install_package


def test_dockerfile_runs_gunicorn_as_non_root(dockerfile):
    kinds = [kind for kind, _ in dockerfile]
    assert ("EXPOSE", str(BACKEND_PORT)) in dockerfile
    user = [a for k, a in dockerfile if k == "USER"][-1]
    assert user not in ("root", "0")
    cmd = [a for k, a in dockerfile if k == "CMD"][-1]
    assert "gunicorn" in cmd and cmd.split()[-1] == "backend._wsgi:app"
    for flag in ('--bind "${HOST}:${PORT}"', '--workers "${WORKERS}"', '--threads "${THREADS}"', "--timeout 300"):
        assert flag in cmd, flag
    assert kinds.index("HEALTHCHECK") > kinds.index("FROM")
    env = " ".join(a for k, a in dockerfile if k == "ENV")
    for default in ("HOST=0.0.0.0", f"PORT={BACKEND_PORT}", "WORKERS=1", "MODEL_DIR=/data/model"):
        assert default in env.split(), default


def test_build_context_holds_what_the_dockerfile_copies(dockerfile):
    patterns = dockerignore_patterns()
    assert ".env" in patterns, "the secrets file must stay out of the build context"
    for kind, args in dockerfile:
        if kind != "COPY" or args.startswith(("--from", "<<")):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for heavy in (".venv", ".venv-ls", ".git", "images", "weights"):
        assert ignored(heavy, patterns), heavy


# The health probe itself (docker/examine-healthcheck) is run against a stand-in /health in test_deploy_image.py.
