"""The one JSON serializer of every answer (app.responses.json_bytes)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pydantic_core
import pytest
from pydantic import BaseModel

from app.responses import json_bytes


def _answer(rng: random.Random, index: int) -> dict[str, object]:
    """An answer of /predict's shape, with numbers of every magnitude and text of every kind."""
    scale = 10.0 ** rng.randint(-30, 30)
    return {
        "session_id": f'sensör-{index}\u2028"quoted"\\\x00',
        "model": "default",
        "prediction": rng.uniform(-1, 1) * scale,
        "step": rng.randint(0, 2**62),
        "model_version": "20261130T143235571855Z-659e0505",
        "replayed": rng.random() < 0.5,
        "previous_model_version": None,
        "warmup_values": None,
        "intervals": [
            {"level": level, "lower": -scale * rng.random(), "upper": scale * rng.random()}
            for level in (0.8, 0.95)
        ],
        "flags": ["outside_training_range"] if index % 7 == 0 else [],
    }


def test_answers_are_the_bytes_pydantic_wrote() -> None:
    rng = random.Random(7)
    body = {"results": [_answer(rng, index) for index in range(2_000)]}

    assert json_bytes(body) == pydantic_core.to_json(body)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_number_json_cannot_carry_is_null(value: float) -> None:
    written = json_bytes({"prediction": value})

    assert json.loads(written, parse_constant=pytest.fail) == {"prediction": None}


def test_numpy_numbers_are_plain_numbers() -> None:
    written = json_bytes({"a": np.float64(1.5), "b": np.int64(3), "c": np.array([0.25, 2.0])})

    assert written == b'{"a":1.5,"b":3,"c":[0.25,2.0]}'


def test_a_pydantic_model_is_its_fields() -> None:
    class Coverage(BaseModel):
        level: float
        coverage: float | None

    written = json_bytes({"coverage": [Coverage(level=0.8, coverage=None)]})

    assert written == b'{"coverage":[{"level":0.8,"coverage":null}]}'


def test_an_integer_over_64_bits_is_written_whole() -> None:
    assert json_bytes({"count": 2**70}) == b'{"count":1180591620717411303424}'


def test_what_orjson_refuses_is_still_valid_json() -> None:
    # Keys that are not strings go to pydantic's serializer, which must not write NaN either.
    written = json_bytes({1: math.nan, "big": 2**70})

    assert json.loads(written, parse_constant=pytest.fail) == {"1": None, "big": 2**70}
