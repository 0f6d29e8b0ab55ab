"""The V2 request and response codec of `fireman serve` (`serving/oip.py`): binary tensors and their checks.

JSON requests are tested end to end against a real server (tests/integration/test_serve_oip.py); here
are the binary tensor extension's framing rules, which Triton's client exercises only when they hold.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from fireman.common.model import Lineage
from fireman.serving.oip import ProtocolError, encode_response, parse_request

ROWS = np.arange(2 * 57, dtype=np.float64).reshape(2, 57)
ROWS[1, 3] = np.nan


def binary_request(rows: np.ndarray, declared: int | None = None, **request: object) -> tuple[bytes, str]:
    raw = rows.astype("<f8").tobytes()
    size = len(raw) if declared is None else declared
    tensor = {
        "name": "features",
        "datatype": "FP64",
        "shape": list(rows.shape),
        "parameters": {"binary_data_size": size},
    }
    header = orjson.dumps({"inputs": [tensor], **request})
    return header + raw, str(len(header))


def test_a_binary_tensor_parses_to_the_same_rows_nan_included() -> None:
    body, length = binary_request(ROWS)
    parsed = parse_request(body, length, max_rows=10)
    np.testing.assert_array_equal(parsed.matrix, ROWS)  # NaN in the same place
    assert parsed.outputs == (("probability", False), ("prediction", False))


@pytest.mark.parametrize(
    ("length", "message"),
    [("abc", "Inference-Header-Content-Length 'abc'"), ("999999", "Inference-Header-Content-Length")],
)
def test_a_wrong_header_length_is_named(length: str, message: str) -> None:
    body, _ = binary_request(ROWS)
    with pytest.raises(ProtocolError, match=message) as error:
        parse_request(body, length, max_rows=10)
    assert error.value.status == 400


def test_binary_sizes_must_add_up_to_the_body_and_to_the_shape() -> None:
    body, length = binary_request(ROWS, declared=8 * 57)
    with pytest.raises(ProtocolError, match=r"declare 456 bytes but 912 follow the JSON header"):
        parse_request(body, length, max_rows=10)
    body, length = binary_request(ROWS)
    header = orjson.loads(body[: int(length)])
    header["inputs"][0]["shape"] = [1, 57]
    wrong_shape = orjson.dumps(header)
    with pytest.raises(ProtocolError, match=r"912 bytes of binary data for shape \[1, 57\] \(456 expected"):
        parse_request(wrong_shape + body[int(length) :], str(len(wrong_shape)), max_rows=10)


def test_binary_data_without_the_header_is_refused() -> None:
    body, length = binary_request(ROWS)
    with pytest.raises(ProtocolError, match="no Inference-Header-Content-Length header"):
        parse_request(body[: int(length)], None, max_rows=10)


def test_infinity_in_binary_data_is_named_by_row_and_feature() -> None:
    rows = ROWS.copy()
    rows[1, 56] = np.inf
    body, length = binary_request(rows)
    with pytest.raises(ProtocolError, match=r"input 'features', row 1, Cont_57: inf is not a finite number"):
        parse_request(body, length, max_rows=10)


def test_binary_outputs_follow_the_json_header_in_order() -> None:
    body, length = binary_request(
        ROWS,
        outputs=[{"name": "prediction", "parameters": {"binary_data": True}}, {"name": "probability"}],
    )
    parsed = parse_request(body, length, max_rows=10)
    content, headers = encode_response(parsed, Lineage("m", "3", "run"), [1, 0], [0.75, 0.25])
    size = int(headers["Inference-Header-Content-Length"])
    header = orjson.loads(content[:size])
    prediction, probability = header["outputs"]
    assert prediction == {
        "name": "prediction",
        "datatype": "INT64",
        "shape": [2],
        "parameters": {"binary_data_size": 16},
    }
    assert probability["data"] == [0.75, 0.25]  # not asked for in binary
    assert np.frombuffer(content[size:], dtype="<i8").tolist() == [1, 0]
    assert header["model_version"] == "3" and header["parameters"]["run_id"] == "run"


def test_binary_data_output_asks_for_every_output_in_binary() -> None:
    body, length = binary_request(ROWS, parameters={"binary_data_output": True})
    parsed = parse_request(body, length, max_rows=10)
    assert parsed.outputs == (("probability", True), ("prediction", True))
    content, headers = encode_response(parsed, Lineage("m", "3", "run"), [1, 0], [0.75, 0.25])
    size = int(headers["Inference-Header-Content-Length"])
    assert np.frombuffer(content[size : size + 16], dtype="<f8").tolist() == [0.75, 0.25]
    assert np.frombuffer(content[size + 16 :], dtype="<i8").tolist() == [1, 0]
