"""`fireman serve` against a real MLflow and really registered models: the Open Inference Protocol V2.

One server (default settings but its port and model name) serves most of the module from a model
registered for it; its answers are compared with the same version loaded directly through
``fireman.common.model``. Triton's own HTTP client talks to a real `fireman serve` process. The
reload tests, and the test of a model that fails on some rows, have a server of their own each,
polling the alias every half second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from fireman.bench.serve import infer_body
from fireman.bench.workload import spambase_rows
from fireman.common.model import Registry, ServingModel
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, MlflowSettings
from fireman.serving.inference import serving
from fireman.serving.settings import ServeSettings
from tests.conftest import REPO_ROOT, forget_model, free_port, unique
from tests.support.scoring import FailsWhenScoring, fit_pipeline, register_model, set_production, wait_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Production:
    names: MlflowSettings
    model: ServingModel  # the production version, loaded directly
    rows: np.ndarray  # Spambase rows with values missing, Cont_1..Cont_57

    def expected(self, matrix: np.ndarray) -> list[float]:
        return self.model.score(matrix)[1]


def load_production(names: MlflowSettings) -> ServingModel:
    registry = Registry(names)
    try:
        target = registry.production()
        assert target is not None
        return registry.load(target)
    finally:
        registry.close()


@pytest.fixture(scope="module")
def production(mlflow_service: MlflowSettings, dataset_settings: DatasetSettings) -> Iterator[Production]:
    name = unique("serve-test")
    names = mlflow_service.model_copy(update={"experiment": name, "model_name": name})
    frame = spambase_rows(dataset_settings, 200, missing_rate=0.2)[list(FEATURE_NAMES)]
    try:
        register_model(names, fit_pipeline(dataset_settings), frame.head(20))
        yield Production(names, load_production(names), frame.to_numpy(np.float64))
    finally:
        forget_model(names)


@pytest.fixture(scope="module")
def client(production: Production) -> Iterator[httpx.Client]:
    settings = ServeSettings(port=free_port(), mlflow=production.names)
    with serving(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert wait_for(lambda: http.get("/v2/health/ready").status_code == 200, 120)
        yield http


def infer_path(production: Production) -> str:
    return f"/v2/models/{production.names.model_name}/infer"


def outputs(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {output["name"]: output for output in response.json()["outputs"]}


def test_health_metadata_and_readiness(client: httpx.Client, production: Production) -> None:
    name, version = production.names.model_name, production.model.version
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "fireman" and "binary_tensor_data" in server["extensions"]

    metadata = client.get(f"/v2/models/{name}").json()
    assert metadata["name"] == name and metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 57]}]
    assert metadata["outputs"] == [
        {"name": "probability", "datatype": "FP64", "shape": [-1]},
        {"name": "prediction", "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["parameters"]["run_id"] == production.model.lineage.run_id
    assert client.get(f"/v2/models/{name}/versions/{version}").json() == metadata
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").status_code == 200

    other = client.get(f"/v2/models/{name}/versions/999/ready")
    assert other.status_code == 404 and "production alias points at version" in other.json()["error"]
    for path in ("/v2/models/no-such-model", "/v2/models/no-such-model/ready"):
        unknown = client.get(path)
        assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"], path
    assert client.get("/v2/nothing-here").json() == {"error": "Not Found"}


def test_a_tensor_of_rows_gets_the_probabilities_of_the_model_loaded_directly(
    client: httpx.Client, production: Production
) -> None:
    matrix = production.rows[:100]
    assert np.isnan(matrix).any()  # missing values go in as null
    response = client.post(infer_path(production), content=infer_body(matrix, request_id="req-1"))

    got = outputs(response)
    body = response.json()
    assert body["model_name"] == production.names.model_name
    assert body["model_version"] == production.model.version and body["id"] == "req-1"
    assert body["parameters"] == {
        "model_version": production.model.version,
        "run_id": production.model.lineage.run_id,
    }
    assert got["probability"]["datatype"] == "FP64" and got["probability"]["shape"] == [100]
    assert got["prediction"]["datatype"] == "INT64" and got["prediction"]["shape"] == [100]
    predictions, probabilities = production.model.score(matrix)
    assert got["probability"]["data"] == pytest.approx(probabilities, abs=1e-12)
    assert got["prediction"]["data"] == predictions

    # The same rows nested instead of flat, and one output picked.
    nested = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": [100, 57],
                "data": [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()],
            }
        ],
        "outputs": [{"name": "prediction"}],
    }
    only = outputs(client.post(infer_path(production), json=nested))
    assert list(only) == ["prediction"] and only["prediction"]["data"] == predictions


def test_one_input_per_feature_gets_the_same_answer(client: httpx.Client, production: Production) -> None:
    matrix = production.rows[:7]
    inputs = []
    for column, name in enumerate(FEATURE_NAMES):
        values = [None if math.isnan(v) else v for v in matrix[:, column].tolist()]
        # Both shapes the protocol allows for a column: [n] and [n, 1].
        shape, data = ([7], values) if column % 2 else ([7, 1], [[v] for v in values])
        inputs.append({"name": name, "datatype": "FP64", "shape": shape, "data": data})
    got = outputs(client.post(infer_path(production), json={"inputs": inputs}))
    assert got["probability"]["data"] == pytest.approx(production.expected(matrix), abs=1e-12)


def test_nan_literals_and_nulls_are_missing_values(client: httpx.Client, production: Production) -> None:
    missing = np.full((2, 57), np.nan)
    missing[1, :10] = production.rows[0, :10]
    flat = ", ".join("NaN" if math.isnan(v) else repr(v) for v in missing.ravel().tolist())
    # Python's json (and Triton's client) write NaN, which is not JSON; null is.
    text = f'{{"inputs": [{{"name": "features", "datatype": "FP64", "shape": [2, 57], "data": [{flat}]}}]}}'
    with_nan = outputs(client.post(infer_path(production), content=text))
    with_null = outputs(client.post(infer_path(production), content=infer_body(missing)))
    expected = production.expected(missing)
    assert with_nan["probability"]["data"] == pytest.approx(expected, abs=1e-12)
    assert with_null["probability"]["data"] == with_nan["probability"]["data"]


def tensor(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "features", "datatype": "FP64", "shape": [1, 57], "data": [0.5] * 57}
    return {**base, **changes}


BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"{inputs", 400, "malformed JSON"),
    ("no inputs", {"id": "x"}, 400, "inputs: Field required"),
    ("empty inputs", {"inputs": []}, 400, "inputs: List should have at least 1 item"),
    (
        "shape not integers",
        {"inputs": [tensor(shape=[1, "57"])]},
        400,
        "input 'features' (inputs[0]) shape[1]",
    ),
    (
        "wrong width",
        {"inputs": [tensor(shape=[1, 56], data=[0.5] * 56)]},
        400,
        "shape [1, 56], expected [n, 57]",
    ),
    (
        "wrong datatype",
        {"inputs": [tensor(datatype="FP32")]},
        400,
        "input 'features': datatype 'FP32', expected",
    ),
    (
        "too few values",
        {"inputs": [tensor(shape=[2, 57])]},
        400,
        "57 values for shape [2, 57] (114 expected)",
    ),
    (
        "not a number",
        {"inputs": [tensor(data=[0.5] * 4 + ["x"] + [0.5] * 52)]},
        400,
        "input 'features', value 4 (row 0, Cont_5): 'x' is not a number",
    ),
    (
        "a boolean",
        {"inputs": [tensor(data=[True] + [0.5] * 56)]},
        400,
        "(row 0, Cont_1): True is not a number",
    ),
    (
        "ragged nesting",
        {"inputs": [tensor(shape=[2, 57], data=[[0.5] * 57, [0.5] * 56])]},
        400,
        "nested data",
    ),
    (
        "infinity",
        b'{"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 57], "data": [Infinity'
        + b", 0.5" * 56
        + b"]}]}",
        400,
        "input 'features', row 0, Cont_1: inf is not a finite number",
    ),
    (
        "beyond float32",
        {"inputs": [tensor(shape=[2, 57], data=[0.5] * 60 + [1e308] + [0.5] * 53)]},
        400,
        "input 'features', row 1, Cont_4: 1e+308 is not a finite number within",
    ),
    (
        "beyond float32, one input per feature",
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP64",
                    "shape": [1],
                    "data": [-1e300 if name == "Cont_9" else 0.5],
                }
                for name in FEATURE_NAMES
            ]
        },
        400,
        "input 'Cont_9', row 0: -1e+300 is not a finite number within",
    ),
    (
        "unknown feature",
        {"inputs": [{"name": "Cont_99", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        400,
        "unknown input 'Cont_99'",
    ),
    (
        "missing features",
        {"inputs": [{"name": "Cont_1", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        400,
        "missing inputs Cont_2, Cont_3, Cont_4, Cont_5, Cont_6 (and 51 more)",
    ),
    (
        "mixed forms",
        {"inputs": [tensor(), {"name": "Cont_1", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        400,
        "drop the other inputs ('Cont_1')",
    ),
    (
        "features twice",
        {"inputs": [tensor(), tensor()]},
        400,
        "input 'features' appears twice (inputs[0] and [1])",
    ),
    ("no data", {"inputs": [tensor(data=None)]}, 400, "input 'features' has no data"),
    ("unknown output", {"inputs": [tensor()], "outputs": [{"name": "score"}]}, 400, "unknown output 'score'"),
    ("too many rows", {"inputs": [tensor(shape=[10_001, 57], data=[])]}, 413, "10001 rows in one request"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.Client, production: Production, case: str, body: Any, status: int, message: str
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(infer_path(production), content=content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error, error


def test_unknown_model_and_version_are_404(client: httpx.Client, production: Production) -> None:
    body = infer_body(production.rows[:1])
    unknown = client.post("/v2/models/no-such-model/infer", content=body)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": f"unknown model 'no-such-model': this server serves {production.names.model_name!r}"
    }
    name, version = production.names.model_name, production.model.version
    assert client.post(f"/v2/models/{name}/versions/999/infer", content=body).status_code == 404
    pinned = client.post(f"/v2/models/{name}/versions/{version}/infer", content=body)
    assert pinned.status_code == 200 and pinned.json()["model_version"] == version


def test_tritonclient_works_unchanged_against_the_fireman_serve_command(
    production: Production, tmp_path: Path
) -> None:
    """Triton's HTTP client, binary tensors (its default) and JSON ones, against a real process."""
    import tritonclient.http as triton

    port = free_port()
    # The command at its default settings, but for where the server listens and which model it serves.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    env |= {
        "FIREMAN_SERVE_PORT": str(port),
        "FIREMAN_MLFLOW_TRACKING_URI": production.names.tracking_uri,
        "FIREMAN_MLFLOW_MODEL_NAME": production.names.model_name,
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        # `python -m` from the checkout: the code under test, whichever checkout the venv installed.
        process = subprocess.Popen(
            [sys.executable, "-m", "fireman.cli", "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    name, version = production.names.model_name, production.model.version
    try:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return bool(client.is_server_ready())
            except Exception:  # not listening yet
                return False

        assert wait_for(ready, 120), log.read_text()
        assert client.is_server_live() and client.is_model_ready(name)
        assert client.get_model_metadata(name)["versions"] == [version]
        assert client.get_server_metadata()["name"] == "fireman"

        matrix = production.rows[:25]
        for binary in (True, False):
            features = triton.InferInput("features", list(matrix.shape), "FP64")
            features.set_data_from_numpy(matrix, binary_data=binary)
            wanted = [
                triton.InferRequestedOutput(n, binary_data=binary) for n in ("probability", "prediction")
            ]
            result = client.infer(name, [features], outputs=wanted, request_id="t1")
            probability = result.as_numpy("probability")
            assert probability.dtype == np.float64 and probability.shape == (25,)
            np.testing.assert_allclose(probability, production.expected(matrix), atol=1e-12)
            assert result.as_numpy("prediction").dtype == np.int64
            assert result.get_response()["model_version"] == version
        # No outputs named: the client asks for every output in binary.
        features = triton.InferInput("features", list(matrix.shape), "FP64").set_data_from_numpy(matrix)
        result = client.infer(name, [features], model_version=version)
        np.testing.assert_allclose(result.as_numpy("probability"), production.expected(matrix), atol=1e-12)
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: ended by the signal, not by an error.
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text()


def test_not_ready_until_promoted_then_moving_the_alias_switches_versions_live(
    mlflow_names: MlflowSettings, dataset_settings: DatasetSettings
) -> None:
    frame = spambase_rows(dataset_settings, 60, missing_rate=0.2)[list(FEATURE_NAMES)]
    first, second = (
        register_model(mlflow_names, fit_pipeline(dataset_settings, seed=seed), frame.head(20), promote=False)
        for seed in (1, 2)
    )
    matrix = frame.to_numpy(np.float64)
    body = infer_body(matrix)
    path = f"/v2/models/{mlflow_names.model_name}/infer"
    # Polled every half second instead of every 10 s, so the test waits on the switch, not on the clock.
    settings = ServeSettings(port=free_port(), mlflow=mlflow_names, reload_interval_s=0.5)
    with serving(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        # No production alias yet: live, not ready, and inference says why.
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        refused = client.post(path, content=body)
        assert refused.status_code == 503 and "no production model loaded yet" in refused.json()["error"]

        set_production(mlflow_names, first)
        assert wait_for(lambda: client.get("/v2/health/ready").status_code == 200, 120)
        v1 = load_production(mlflow_names)
        assert client.post(path, content=body).json()["model_version"] == first

        # Requests keep coming while the alias moves; each is answered whole by one version.
        answers: list[dict[str, Any]] = []
        stop = threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                while not stop.is_set():
                    answers.append(own.post(path, content=body).json())

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            set_production(mlflow_names, second)
            v2 = load_production(mlflow_names)
            assert wait_for(lambda: bool(answers) and answers[-1]["model_version"] == second, 60)
        finally:
            stop.set()
            asker.join(timeout=60)

    expected = {first: v1.score(matrix)[1], second: v2.score(matrix)[1]}
    assert expected[first] != expected[second]
    versions = [answer["model_version"] for answer in answers]
    assert versions[0] == first and versions[-1] == second
    assert versions == sorted(versions, key=lambda v: v == second)  # never back to the old one
    for answer in answers:
        got = {output["name"]: output["data"] for output in answer["outputs"]}["probability"]
        assert got == pytest.approx(expected[answer["model_version"]], abs=1e-12)


def test_moving_the_alias_while_serve_is_idle_answers_with_where_it_points_now(
    mlflow_names: MlflowSettings, dataset_settings: DatasetSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """No request while the alias moves twice: the first one after is answered by the version the alias
    names then, not by one it named on the way (loaded meanwhile, waiting for a request to take it)."""
    frame = spambase_rows(dataset_settings, 20, missing_rate=0.2)[list(FEATURE_NAMES)]
    first, second, third = (
        register_model(mlflow_names, fit_pipeline(dataset_settings, seed=seed), frame, promote=False)
        for seed in (1, 2, 3)
    )
    set_production(mlflow_names, first)
    body = infer_body(frame.to_numpy(np.float64))
    path = f"/v2/models/{mlflow_names.model_name}/infer"
    settings = ServeSettings(port=free_port(), mlflow=mlflow_names, reload_interval_s=0.5)

    def logged(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    with (
        caplog.at_level(logging.INFO, logger="fireman.serving.reload"),
        serving(settings) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert wait_for(lambda: client.get("/v2/health/ready").status_code == 200, 120)
        assert client.post(path, content=body).json()["model_version"] == first

        # On to a new version while the one moved to on the way waits: the newer one replaces it.
        set_production(mlflow_names, second)
        assert wait_for(lambda: logged(f"version {second} (run") == 1, 60), caplog.text
        set_production(mlflow_names, third)
        assert wait_for(lambda: logged(f"version {third} replaces version {second}") == 1, 60), caplog.text
        assert client.post(path, content=body).json()["model_version"] == third

        # Away and back to the version in use: the one moved to on the way is dropped.
        set_production(mlflow_names, second)
        assert wait_for(lambda: logged(f"version {second} (run") == 2, 60), caplog.text
        set_production(mlflow_names, third)
        assert wait_for(lambda: logged(f"is back at version {third}: version {second}") == 1, 60), caplog.text
        assert client.post(path, content=body).json()["model_version"] == third


def test_a_request_the_model_fails_on_fails_alone_not_the_requests_scored_with_it(
    mlflow_names: MlflowSettings, dataset_settings: DatasetSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests that queue during a model call go into the next call together; when that call fails
    on one request's rows, that request gets the 500 and the others their answers."""
    frame = spambase_rows(dataset_settings, 2000, missing_rate=0.2)[list(FEATURE_NAMES)]
    # Spambase's largest value is below 20 000: only the bad request's rows reach the model's bug.
    model = FailsWhenScoring(fit_pipeline(dataset_settings), above=1e6)
    register_model(mlflow_names, model, frame.head(20), serialization="cloudpickle")
    rows = frame.to_numpy(np.float64)
    path = f"/v2/models/{mlflow_names.model_name}/infer"
    big, good, bad = infer_body(rows), infer_body(rows[:1]), infer_body(np.full((50, 57), 1e9))
    settings = ServeSettings(port=free_port(), mlflow=mlflow_names)

    async def together(url: str) -> list[int]:
        """A big request, then a bad one among good ones, all at once: those queue behind the big one."""
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post(path, content=content) for content in (big, bad, *[good] * 40))
            )
        return [response.status_code for response in responses]

    def merged_with_the_bad_one(url: str) -> bool:
        statuses = asyncio.run(together(url))
        assert statuses[1] == 500 and set(statuses[:1] + statuses[2:]) == {200}, statuses
        return any("scoring each on its own" in record.getMessage() for record in caplog.records)

    with caplog.at_level(logging.WARNING, logger="fireman.serving.inference"), serving(settings) as url:
        assert wait_for(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, 120)
        # Until the bad request was merged with others at least once (usually the first time).
        assert wait_for(lambda: merged_with_the_bad_one(url), 60), caplog.text
