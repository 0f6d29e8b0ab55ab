"""The Open Inference Protocol V2 (KServe, Triton) as ``fireman serve`` speaks it: requests in, responses out.

A request carries the 57 event features either as one FP64 tensor ``features`` of shape [n, 57]
(columns Cont_1..Cont_57, data row-major flat or nested) or as one FP64 input per feature
(``Cont_1``..``Cont_57``, each [n] or [n, 1]). A missing value is ``null`` or ``NaN`` (JSON has no
NaN, but Python's json and Triton's client write the literal), never 0. Tensors may also come in
binary (Triton's ``binary_tensor_data`` extension: the JSON header, then raw little-endian bytes,
split by ``Inference-Header-Content-Length``), which is what Triton's client sends by default.

The answer has two outputs: ``probability`` (FP64 [n], the class-1 probability) and ``prediction``
(INT64 [n], the class), in JSON or, when asked for, in binary. Anything else is a ``ProtocolError``
whose message names the input, field or output at fault; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from fireman.common.model import Lineage
from fireman.common.schema import FEATURE_NAMES, FLOAT32_MAX

FEATURES_INPUT = "features"
PROBABILITY_OUTPUT = "probability"
PREDICTION_OUTPUT = "prediction"
# Output name -> (V2 datatype, the numpy type of its binary form: little-endian as the extension says).
OUTPUTS: dict[str, tuple[str, str]] = {
    PROBABILITY_OUTPUT: ("FP64", "<f8"),
    PREDICTION_OUTPUT: ("INT64", "<i8"),
}
WIDTH = len(FEATURE_NAMES)
FEATURE_COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}
BINARY_HEADER = "inference-header-content-length"
NUMBER_TYPES = frozenset({float, int, type(None)})


class ProtocolError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status, the message names the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The V2 error object."""
    return orjson.dumps({"error": message})


class _Strict(BaseModel):
    # Fields the protocol adds later (or other servers' extensions) are ignored, not refused.
    model_config = ConfigDict(extra="ignore")


class _Input(_Strict):
    name: StrictStr
    shape: list[Annotated[StrictInt, Field(ge=0)]]
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    # Checked by _values: pydantic would walk (and copy) every number of a large tensor.
    data: Any = None


class _Output(_Strict):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class _Request(_Strict):
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[_Input], Field(min_length=1)]
    outputs: list[_Output] | None = None


@dataclass(frozen=True)
class InferRequest:
    """A validated request: the rows in Cont_1..Cont_57 order (NaN = missing) and what to answer."""

    id: str | None
    matrix: np.ndarray
    outputs: tuple[tuple[str, bool], ...]  # (output name, in binary)


def parse_request(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    """Validate an inference request body; ``header_length`` is its Inference-Header-Content-Length."""
    header, binary = _split(body, header_length)
    request = _validate(_load_json(header))
    chunks = _binary_chunks(request.inputs, binary, header_length is not None)
    names = [tensor.name for tensor in request.inputs]
    if FEATURES_INPUT in names:
        first = names.index(FEATURES_INPUT)
        if FEATURES_INPUT in names[first + 1 :]:
            again = names.index(FEATURES_INPUT, first + 1)
            raise ProtocolError(
                400, f"input {FEATURES_INPUT!r} appears twice (inputs[{first}] and [{again}])"
            )
        if len(names) > 1:
            others = ", ".join(repr(name) for name in names if name != FEATURES_INPUT)
            raise ProtocolError(
                400, f"input {FEATURES_INPUT!r} carries every feature; drop the other inputs ({others})"
            )
        matrix = _tensor_matrix(request.inputs[0], chunks[0], max_rows)
    else:
        matrix = _feature_matrix(request.inputs, chunks, max_rows)
    return InferRequest(request.id, matrix, _outputs(request))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise ProtocolError(
            400,
            f"Inference-Header-Content-Length {header_length!r} is not the length of the JSON header "
            f"of this {len(body)}-byte body",
        )
    size = int(header_length)
    return body[:size], body[size:]


def _load_json(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    # JSON has no NaN, but Python's json and Triton's client write NaN (and Infinity) literals; only
    # then is the slower standard parser needed. Infinity is let through here and refused by name later.
    try:
        return json.loads(text, parse_constant=float)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(400, f"malformed JSON: {first_error}") from None


def _validate(document: Any) -> _Request:
    if not isinstance(document, dict):
        raise ProtocolError(400, "the request must be a JSON object with 'inputs'")
    try:
        return _Request.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = _location(document, error["loc"])
        raise ProtocolError(400, f"{where}: {error['msg']}") from None


def _location(document: dict[str, Any], loc: Sequence[int | str]) -> str:
    """``inputs[0].shape[1]``, with the input's name when it has one: ``input 'features' shape[1]``."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if len(loc) >= 2 and loc[0] == "inputs" and isinstance(loc[1], int):
        tensors = document.get("inputs")
        tensor = tensors[loc[1]] if isinstance(tensors, list) and loc[1] < len(tensors) else None
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if isinstance(name, str):
            head, _, rest = path.partition(".")
            return f"input {name!r} ({head}){' ' + rest if rest else ''}"
    return path or "the request"


def _binary_chunks(inputs: list[_Input], binary: bytes, has_header: bool) -> list[bytes | None]:
    """Each input's raw bytes (binary extension), in order, or None where it carries JSON ``data``."""
    chunks: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        parameters = tensor.parameters or {}
        if "shared_memory_region" in parameters:
            raise ProtocolError(400, f"input {tensor.name!r}: shared memory is not supported; send data")
        size = parameters.get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise ProtocolError(400, f"input {tensor.name!r} has no data")
            chunks.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProtocolError(
                400, f"input {tensor.name!r}: parameters.binary_data_size must be a byte count"
            )
        if not has_header:
            raise ProtocolError(
                400,
                f"input {tensor.name!r} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header",
            )
        if tensor.data is not None:
            raise ProtocolError(400, f"input {tensor.name!r} has both data and binary_data_size")
        chunks.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise ProtocolError(
            400, f"the binary inputs declare {offset} bytes but {len(binary)} follow the JSON header"
        )
    return chunks


def _check_datatype(tensor: _Input) -> None:
    if tensor.datatype != "FP64":
        raise ProtocolError(400, f"input {tensor.name!r}: datatype {tensor.datatype!r}, expected 'FP64'")


def _tensor_matrix(tensor: _Input, chunk: bytes | None, max_rows: int) -> np.ndarray:
    _check_datatype(tensor)
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != WIDTH or shape[0] < 1:
        raise ProtocolError(
            400,
            f"input {tensor.name!r}: shape {shape}, expected [n, {WIDTH}] with n >= 1 "
            f"(one column per feature, {FEATURE_NAMES[0]}..{FEATURE_NAMES[-1]})",
        )
    _check_rows(shape[0], max_rows)
    values = _values(tensor, chunk, shape[0] * WIDTH)
    matrix = values.reshape(shape[0], WIDTH)
    _check_finite(matrix, tensor.name, lambda row, column: f"row {row}, {FEATURE_NAMES[column]}")
    return matrix


def _feature_matrix(inputs: list[_Input], chunks: list[bytes | None], max_rows: int) -> np.ndarray:
    seen: dict[str, int] = {}
    rows: int | None = None
    first = ""
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if name not in FEATURE_COLUMN:
            raise ProtocolError(
                400,
                f"unknown input {name!r}: send one FP64 input {FEATURES_INPUT!r} of shape [n, {WIDTH}], or "
                f"one FP64 input per feature named {FEATURE_NAMES[0]}..{FEATURE_NAMES[-1]}",
            )
        if name in seen:
            raise ProtocolError(400, f"input {name!r} appears twice (inputs[{seen[name]}] and [{index}])")
        seen[name] = index
        _check_datatype(tensor)
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise ProtocolError(400, f"input {name!r}: shape {shape}, expected [n] or [n, 1] with n >= 1")
        if rows is None:
            rows, first = shape[0], name
            _check_rows(rows, max_rows)
        elif shape[0] != rows:
            raise ProtocolError(400, f"input {name!r} has {shape[0]} rows but input {first!r} has {rows}")
    missing = [name for name in FEATURE_NAMES if name not in seen]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ProtocolError(
            400,
            f"missing inputs {', '.join(missing[:5])}{more}: send every feature "
            f"{FEATURE_NAMES[0]}..{FEATURE_NAMES[-1]} (null or NaN for a missing value)",
        )
    assert rows is not None
    matrix = np.empty((rows, WIDTH), dtype=np.float64)
    for tensor, chunk in zip(inputs, chunks, strict=True):
        column = _values(tensor, chunk, rows)
        _check_finite(column, tensor.name, lambda row, _column: f"row {row}")
        matrix[:, FEATURE_COLUMN[tensor.name]] = column
    return matrix


def _check_rows(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise ProtocolError(413, f"{rows} rows in one request; the limit is {max_rows}")


def _values(tensor: _Input, chunk: bytes | None, expected: int) -> np.ndarray:
    """The tensor's values as a flat float64 array of ``expected`` numbers (NaN for null)."""
    if chunk is not None:
        if len(chunk) != expected * 8:
            raise ProtocolError(
                400,
                f"input {tensor.name!r}: {len(chunk)} bytes of binary data for shape {tensor.shape} "
                f"({expected * 8} expected: FP64 is 8 bytes a value)",
            )
        return np.frombuffer(chunk, dtype="<f8").astype(np.float64)
    flat = _flatten(tensor)
    if len(flat) != expected:
        raise ProtocolError(
            400, f"input {tensor.name!r}: {len(flat)} values for shape {tensor.shape} ({expected} expected)"
        )
    # One pass in C over the types; only a bad request pays for finding which value is wrong.
    if not set(map(type, flat)) <= NUMBER_TYPES:
        index = next(i for i, value in enumerate(flat) if type(value) not in NUMBER_TYPES)
        raise ProtocolError(
            400,
            f"input {tensor.name!r}, value {index} ({_where(tensor, index)}): {flat[index]!r} is not a "
            "number (null or NaN for a missing value)",
        )
    return np.array(flat, dtype=np.float64)


def _flatten(tensor: _Input) -> list[Any]:
    """Row-major values of flat or nested ``data``; nested lists must follow the shape exactly."""
    data = tensor.data
    if not isinstance(data, list):
        raise ProtocolError(400, f"input {tensor.name!r}: data must be an array of numbers")
    shape = tensor.shape
    count = 1
    for depth in range(len(shape)):
        if not data or type(data[0]) is not list:
            break
        count *= shape[depth]
        width = shape[depth + 1] if depth + 1 < len(shape) else None
        ragged = any(type(row) is not list or len(row) != width for row in data)
        if width is None or len(data) != count or ragged:
            raise ProtocolError(400, f"input {tensor.name!r}: nested data does not follow shape {shape}")
        data = list(chain.from_iterable(data))
    return data


def _where(tensor: _Input, index: int) -> str:
    if tensor.name == FEATURES_INPUT:
        return f"row {index // WIDTH}, {FEATURE_NAMES[index % WIDTH]}"
    return f"row {index}"


def _check_finite(values: np.ndarray, name: str, where: Any) -> None:
    # Beyond float32's range counts as infinite: sklearn's trees compare in float32, and refuse the
    # whole model call (every request merged into it) on a value that overflows there.
    out_of_range = np.abs(values) > FLOAT32_MAX
    if out_of_range.any():
        position = np.argwhere(out_of_range)[0]
        row, column = (int(position[0]), int(position[1])) if values.ndim == 2 else (int(position[0]), 0)
        raise ProtocolError(
            400,
            f"input {name!r}, {where(row, column)}: {values[tuple(position)]} is not a finite number "
            f"within ±{FLOAT32_MAX:.7g} (the largest float32)",
        )


def _outputs(request: _Request) -> tuple[tuple[str, bool], ...]:
    all_binary = (request.parameters or {}).get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise ProtocolError(400, "parameters.binary_data_output must be true or false")
    if not request.outputs:
        return tuple((name, all_binary) for name in OUTPUTS)
    chosen: list[tuple[str, bool]] = []
    for index, output in enumerate(request.outputs):
        if output.name not in OUTPUTS:
            raise ProtocolError(
                400, f"unknown output {output.name!r} (outputs[{index}]); outputs are {', '.join(OUTPUTS)}"
            )
        if any(name == output.name for name, _ in chosen):
            raise ProtocolError(400, f"output {output.name!r} is asked for twice")
        binary = (output.parameters or {}).get("binary_data", all_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(400, f"output {output.name!r}: parameters.binary_data must be true or false")
        chosen.append((output.name, binary))
    return tuple(chosen)


def encode_response(
    request: InferRequest, lineage: Lineage, predictions: Sequence[int], probabilities: Sequence[float]
) -> tuple[bytes, dict[str, str]]:
    """The V2 response body, and its extra headers (the JSON header's length when tensors are binary)."""
    values: dict[str, Sequence[float] | Sequence[int]] = {
        PROBABILITY_OUTPUT: probabilities,
        PREDICTION_OUTPUT: predictions,
    }
    rows = len(predictions)
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for name, binary in request.outputs:
        datatype, dtype = OUTPUTS[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [rows]}
        if binary:
            data = np.asarray(values[name], dtype=dtype).tobytes()
            output["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            output["data"] = values[name]
        outputs.append(output)
    response: dict[str, Any] = {"model_name": lineage.model_name, "model_version": lineage.model_version}
    if request.id is not None:
        response["id"] = request.id
    response["parameters"] = {"model_version": lineage.model_version, "run_id": lineage.run_id}
    response["outputs"] = outputs
    header = orjson.dumps(response)
    if not raw:
        return header, {}
    return header + b"".join(raw), {"Inference-Header-Content-Length": str(len(header))}
