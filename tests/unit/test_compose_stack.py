"""What CI can check of the Docker Compose stack without Docker: structure, secrets, commands, Grafana.

The images are not built or run here (no Compose plugin, no registry); see infra/docker/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from fireman.common.measurements import CONTRACT

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ROOT = "/opt/fireman"  # WORKDIR of the project image: the repository's layout
PROJECT_IMAGE = "${FIREMAN_IMAGE:-fireman:local}"
HEALTHCHECK = f"{IMAGE_ROOT}/infra/docker/healthcheck.py"
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")


def read_compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


SERVICES: dict[str, dict[str, Any]] = read_compose()["services"]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def waited_for(condition: str) -> set[str]:
    return {
        name
        for service in SERVICES.values()
        for name, rule in (service.get("depends_on") or {}).items()
        if rule.get("condition") == condition
    }


def one_shots() -> set[str]:
    return {name for name, service in SERVICES.items() if service.get("restart") == "no"}


def test_the_stack_has_every_component_of_the_issue() -> None:
    expected = {
        "kafka",
        "influxdb",
        "mlflow",
        "mlflow-db",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-db",
        "collector",
        "sink",
        "scorer",
        "monitor",
        "generator",
        "grafana",
    }
    assert expected <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("${KAFKA_IMAGE:-apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert SERVICES["generator"]["profiles"] == ["demo"]
    for name in ("collector", "sink", "scorer", "monitor", "generator", "mlflow", "airflow-scheduler"):
        assert (
            SERVICES[name]["image"] == PROJECT_IMAGE and SERVICES[name]["build"]["dockerfile"] == "Dockerfile"
        )
    # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which the image lacks.
    assert SERVICES["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert SERVICES["airflow-init"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
        "postgresql+psycopg2://"
    )
    assert "mlflow-artifacts:/var/lib/mlflow" in SERVICES["mlflow"]["volumes"]
    assert (
        "@airflow-db:" in SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_have_healthchecks(name: str) -> None:
    service = SERVICES[name]
    if name in one_shots():
        assert "healthcheck" not in service, f"{name} exits when done: a healthcheck would never pass"
        return
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_on_conditions(name: str) -> None:
    for dependency, rule in (SERVICES[name].get("depends_on") or {}).items():
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        condition = rule.get("condition")
        assert condition in ("service_healthy", "service_completed_successfully"), (name, dependency)
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dependency], (
                f"{name} waits for {dependency}'s missing healthcheck"
            )
        # A profile-less service must not wait for one that only runs under a profile.
        if "profiles" in SERVICES[dependency]:
            assert set(SERVICES[name].get("profiles", [])) >= set(SERVICES[dependency]["profiles"]), name


def test_one_shot_services_are_the_ones_waited_for_to_complete() -> None:
    assert (
        one_shots()
        == waited_for("service_completed_successfully")
        == {"kafka-init", "airflow-init", "trainer"}
    )


def test_every_variable_comes_from_env_example_and_secrets_are_required() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    used = {(name, mode) for name, mode in VARIABLE.findall(text)}
    missing = sorted({name for name, _ in used} - set(example))
    assert not missing, f"variables used by docker-compose.yml but absent from .env.example: {missing}"
    for name, mode in used:
        if SECRET_NAME.search(name) and name != "FIREMAN_COLLECTOR_TOKEN":  # the token is optional
            assert mode == "?", f"${{{name}}} must be required (${{{name}:?...}}), not defaulted"
    for name, value in example.items():
        if SECRET_NAME.search(name) or name == "KAFKA_CLUSTER_ID":
            assert value == "", f".env.example must not ship a value for {name}"


def literal_secrets(node: Any, path: str = "") -> list[str]:
    """Environment values that carry a secret without taking it from a variable."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            literal = isinstance(value, str | int | float) and not re.fullmatch(
                r"\$\{[^}]+\}|/[\w/.-]+",
                str(value),  # a variable, or a file path
            )
            if literal and SECRET_NAME.search(str(key)):
                found.append(where)
            found += literal_secrets(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += literal_secrets(item, f"{path}[{index}]")
    elif isinstance(node, str):
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", node):
            if not re.fullmatch(r"\$\{[^}]+\}", password):
                found.append(path)
    return found


def test_no_literal_secrets() -> None:
    assert literal_secrets(read_compose()) == []


def test_published_ports_bind_to_the_configured_address() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("${FIREMAN_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port}"


# ----- commands ----------------------------------------------------------------------------------


def fireman_cli() -> Any:
    """The click command tree of `fireman` (typer ships its own click, hence the duck typing)."""
    from fireman.cli import app

    return typer.main.get_command(app)


def resolve_click(group: Any, args: list[str]) -> tuple[Any, list[str]]:
    command = group
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`fireman {' '.join(args)}`: no command {name!r}"
        command = sub
    return command, rest


def project_commands() -> dict[str, list[str]]:
    """Services that run the image's default entry point (`fireman`), with their arguments."""
    return {
        name: [str(arg) for arg in service["command"]]
        for name, service in SERVICES.items()
        if service.get("image") == PROJECT_IMAGE and "entrypoint" not in service
    }


def test_volumes_of_the_project_image_are_directories_it_gives_its_user() -> None:
    """A named volume mounted where the image has no directory is created by root: the containers
    (uid 10001) could not write there; Airflow's log volume was such a mount."""
    dockerfile = " ".join((ROOT / "Dockerfile").read_text().replace("\\\n", " ").split())
    made = re.search(r"mkdir -p ([^&]+)&&", dockerfile)
    owned = re.search(r"chown (?:-R )?fireman:fireman ([^&\n]+?)(?: &&|$| WORKDIR)", dockerfile)
    assert made and owned, "the Dockerfile makes and chowns the fireman user's directories in one RUN"
    made_dirs, owned_dirs = set(made.group(1).split()), set(owned.group(1).split())
    mounts = {
        mount.split(":")[1]
        for service in SERVICES.values()
        if service.get("image") == PROJECT_IMAGE
        for mount in service.get("volumes") or []
        if not mount.startswith(("./", "/"))  # named volumes only; bind mounts keep the host's owner
    }
    assert mounts, "no project service mounts a named volume: the test reads the wrong key"
    for mount in sorted(mounts):
        assert mount in made_dirs, f"{mount} is mounted but the image never creates it"
        assert any(mount == d or mount.startswith(d + "/") for d in owned_dirs), f"{mount} is not the user's"


def test_dockerfile_entry_point_is_the_fireman_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fireman"]' in dockerfile
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fireman"] == "fireman.cli:main"
    for path in re.findall(r"chmod 0755 ([^\n\\]+)", dockerfile)[0].split():
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("name", sorted(project_commands()))
def test_compose_commands_are_real_fireman_commands(name: str) -> None:
    args = project_commands()[name]
    command, rest = resolve_click(fireman_cli(), args)
    assert not hasattr(command, "commands"), f"{name}: `fireman {' '.join(args)}` names a group"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [arg for arg in rest if arg.startswith("--") and arg not in known]
    assert not unknown, f"{name}: `fireman {args[0]}` has no option {unknown}"


def airflow_parser() -> argparse.ArgumentParser:
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


def resolve_argparse(parser: argparse.ArgumentParser, args: list[str]) -> None:
    rest = list(args)
    while rest and not rest[0].startswith("-"):
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            break
        name = rest.pop(0)
        assert name in actions[0].choices, f"`airflow {' '.join(args)}`: no command {name!r}"
        parser = actions[0].choices[name]
    known = {opt for action in parser._actions for opt in action.option_strings}
    unknown = [arg for arg in rest if arg.startswith("-") and arg not in known]
    assert not unknown, f"`airflow {' '.join(args)}`: unknown options {unknown}"


def test_airflow_commands_and_healthchecks_are_real_airflow_commands() -> None:
    parser = airflow_parser()
    checked = 0
    for service in SERVICES.values():
        if service.get("entrypoint") == [f"{IMAGE_ROOT}/infra/docker/airflow.sh"]:
            resolve_argparse(parser, [str(arg) for arg in service["command"]])
            checked += 1
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"] and test[1].startswith("airflow "):
            resolve_argparse(parser, shlex.split(test[1])[1:])
            checked += 1
    assert checked == 7  # init, api-server, scheduler, dag-processor, triggerer + two job checks


def test_entry_point_scripts_and_healthchecks_exist() -> None:
    for name, service in SERVICES.items():
        for path in service.get("entrypoint", [])[:1]:
            if path.startswith(IMAGE_ROOT):
                script = ROOT / path.removeprefix(IMAGE_ROOT + "/")
                assert script.is_file() and script.stat().st_mode & 0o111, f"{name}: {script} not executable"
        test = service.get("healthcheck", {}).get("test", [])
        if HEALTHCHECK in test:
            mode = test[test.index(HEALTHCHECK) + 1]
            assert mode in ("http", "group"), f"{name}: healthcheck mode {mode}"
            assert (ROOT / "infra/docker/healthcheck.py").is_file()


def test_healthcheck_script_reports_an_unreachable_url() -> None:
    result = subprocess.run(
        ["python3", str(ROOT / "infra/docker/healthcheck.py"), "http", "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "unhealthy: http://127.0.0.1:9/ unreachable" in result.stderr


def test_compose_config_where_the_plugin_exists() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "infra/docker/check-compose.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if "NOT RUN" in result.stdout:
        warnings.warn(result.stdout.strip(), UserWarning, stacklevel=1)
    else:
        assert "docker compose config: OK" in result.stdout


# ----- Grafana ------------------------------------------------------------------------------------

GRAFANA = ROOT / "infra" / "grafana"


def grafana_dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))]


def dashboard_sources(dashboard: dict[str, Any]) -> set[str]:
    return {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}


def influx_dashboard() -> dict[str, Any]:
    (dashboard,) = [d for d in grafana_dashboards() if dashboard_sources(d) == {"fireman-influxdb"}]
    return dashboard


def prometheus_dashboard() -> dict[str, Any]:
    (dashboard,) = [d for d in grafana_dashboards() if dashboard_sources(d) == {"fireman-prometheus"}]
    return dashboard


def influxql_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [target["query"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [a["query"] for a in dashboard["annotations"]["list"] if "query" in a]
    return queries


def test_grafana_provisioning_is_valid_and_consistent() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/influxdb.yml").read_text())
    (influx,) = datasources["datasources"]
    assert influx["type"] == "influxdb" and influx["url"] == "http://influxdb:8086"
    assert influx["secureJsonData"]["password"].startswith("$")  # from the environment, not literal
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/fireman.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = SERVICES["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{path}:ro" in mounts
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    # Grafana expands $VARIABLES in provisioning files from its own environment.
    grafana_env = SERVICES["grafana"]["environment"]
    for text in (GRAFANA / "provisioning/datasources/influxdb.yml").read_text().splitlines():
        for variable in re.findall(r"\$([A-Z_][A-Z0-9_]*)", text.partition("#")[0]):
            assert variable in grafana_env, f"the datasource reads ${variable}, which grafana is not given"
    (prometheus,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES["grafana"]["depends_on"]
    dashboards = grafana_dashboards()
    assert len(dashboards) == 2
    for dashboard in dashboards:  # each dashboard reads one datasource
        assert dashboard_sources(dashboard) in ({influx["uid"]}, {prometheus["uid"]})


def test_grafana_shows_the_dashboard_panels() -> None:
    dashboard = influx_dashboard()
    queries = " ".join(influxql_queries(dashboard))
    for measurement in (
        "measurements",
        "predictions",
        "performance",
        "drift",
        "model_events",
        "consumer_lag",
        "live_comparison",
    ):
        assert f'FROM "{measurement}"' in queries, measurement
    # The scorer writes a challenger's shadow answers beside production's: charts of what was served
    # must leave them out.
    for query in influxql_queries(dashboard):
        if 'FROM "predictions"' in query:
            assert "\"role\" != 'shadow'" in query, query
    assert any(a.get("name") == "Model switches" for a in dashboard["annotations"]["list"])


@pytest.mark.parametrize("query", influxql_queries(influx_dashboard()))
def test_grafana_queries_read_only_the_contract(query: str) -> None:
    (measurement,) = re.findall(r'FROM "([^"]+)"', query)
    assert measurement in CONTRACT, f"no measurement {measurement!r} in the platform's contract"
    known = CONTRACT[measurement].fields | CONTRACT[measurement].tags
    without_aliases = re.sub(r'\bAS "[^"]*"', "", query)
    identifiers = set(re.findall(r'"([^"]+)"', without_aliases)) - {measurement}
    assert identifiers <= known, f"{measurement} has no field or tag {sorted(identifiers - known)}"


# ----- Prometheus ---------------------------------------------------------------------------------


def exposed_metric_names() -> set[str]:
    """Every sample name the collector and the consumers expose, from their real collectors."""
    from types import SimpleNamespace

    from fireman.monitoring.monitor import Monitor, monitor_metrics
    from fireman.monitoring.settings import MonitorSettings
    from fireman.serving.scorer import Scorer, scorer_metrics
    from fireman.serving.settings import ScorerSettings
    from fireman.streaming.collector import CollectorMetrics
    from fireman.streaming.sink import SinkStats, sink_metrics

    collector = CollectorMetrics()
    collector.answered("/v1/events", 422)
    collector.records.labels("measurements").inc()
    collector.publish_seconds.observe(0.01)
    scorer = Scorer(ScorerSettings())
    scorer.stats.model_version, scorer.stats.shadow_version = "1", "2"
    scorer.stats.latencies_ms.extend([1, 2, 3])
    scorer._consumer = SimpleNamespace(last_lag=0)  # type: ignore[assignment]  # a lag reading only
    monitor = Monitor(MonitorSettings())
    monitor._consumer = SimpleNamespace(last_lag=0)  # type: ignore[assignment]
    monitor.online_accuracy["1"] = 0.9
    window, drift = (
        SimpleNamespace(key=SimpleNamespace(version="1")),
        SimpleNamespace(share_drifted_features=0.1),
    )
    monitor.worker.results.append((window, drift))  # type: ignore[arg-type]  # the newest tested window
    families = [
        *collector.registry.collect(),
        *sink_metrics(SinkStats(), SimpleNamespace(last_lag=0)).collect(),  # type: ignore[arg-type]
        *scorer_metrics(scorer).collect(),
        *monitor_metrics(monitor).collect(),
    ]
    return {sample.name for family in families for sample in family.samples}


def test_prometheus_scrapes_every_metrics_endpoint_of_the_stack() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    assert targets == {
        "collector": "collector:8000",
        "sink": "sink:9101",
        "scorer": "scorer:9102",
        "monitor": "monitor:9103",
    }
    for name in ("sink", "scorer", "monitor"):
        # The defaults of FIREMAN_<NAME>_METRICS_PORT, listening beyond the container's loopback.
        assert SERVICES[name]["environment"][f"FIREMAN_{name.upper()}_METRICS_HOST"] == "0.0.0.0"
    assert (
        "./infra/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in SERVICES["prometheus"]["volumes"]
    )


def test_the_metrics_dashboard_reads_only_metrics_the_processes_expose() -> None:
    exposed = exposed_metric_names()
    expressions = [t["expr"] for p in prometheus_dashboard()["panels"] for t in p["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\b(fireman_[a-z_]+)", expr)}
    assert used, expressions
    assert used <= exposed, f"not exposed by any process: {sorted(used - exposed)}"


def test_the_image_installs_the_airflow_extra() -> None:
    # Compose runs Airflow from the project image, and Airflow is an extra of the package.
    dockerfile = " ".join((ROOT / "Dockerfile").read_text().replace("\\\n", " ").split())
    install = next(line for line in dockerfile.split("RUN ") if "-r pyproject.toml" in line)
    assert "--extra airflow" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("apache-airflow") for requirement in extras["airflow"])


def project_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in SERVICES.items() if service.get("image") == PROJECT_IMAGE}


def test_fireman_uses_influxdb_as_a_plain_user_of_the_database_the_operator_creates() -> None:
    """The sink crash-looped on a refused CREATE DATABASE: compose runs InfluxDB with auth on, its
    admin creates the database and fireman's user, and fireman holds no admin credentials (that a
    refused CREATE is not fatal is `tests/integration/test_influx_auth.py`)."""
    influx = SERVICES["influxdb"]["environment"]
    assert influx["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert influx["INFLUXDB_DB"] == "${FIREMAN_INFLUXDB_DATABASE:-fireman}"
    assert influx["INFLUXDB_USER"].startswith("${FIREMAN_INFLUXDB_USERNAME:")
    assert influx["INFLUXDB_ADMIN_USER"] != influx["INFLUXDB_USER"]
    clients = {
        name: service.get("environment") or {}
        for name, service in project_services().items()
        if "FIREMAN_INFLUXDB_URL" in (service.get("environment") or {})
    }
    assert {"sink", "scorer", "monitor"} <= set(clients), "the InfluxDB clients are not where the test looks"
    for name, env in clients.items():
        assert env["FIREMAN_INFLUXDB_DATABASE"] == influx["INFLUXDB_DB"], name
        assert env["FIREMAN_INFLUXDB_USERNAME"].startswith("${FIREMAN_INFLUXDB_USERNAME:"), name
        assert not any("ADMIN" in key for key in env if key.startswith(("INFLUX", "FIREMAN_INFLUX"))), name


def test_retrain_tasks_share_no_files_only_the_mlflow_server() -> None:
    """Training data went between tasks as local paths: the Airflow containers mount nothing but their
    logs, and the window travels as a run artifact through MLflow's artifact proxy (runs:/ URIs over
    HTTP, `training/handoff.py`), which every worker reaches."""
    airflow = {name: service for name, service in SERVICES.items() if name.startswith("airflow-")}
    airflow.pop("airflow-db")
    for name, service in airflow.items():
        mounts = {mount.split(":")[1] for mount in service.get("volumes") or []}
        assert mounts <= {"/var/lib/airflow/logs"}, f"{name} mounts {mounts}"
        assert service["environment"]["FIREMAN_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
    start = (ROOT / "mlflow" / "start-server.sh").read_text()
    assert "--serve-artifacts" in start and "--artifacts-destination" in start
    assert SERVICES["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("/var/lib/mlflow")
