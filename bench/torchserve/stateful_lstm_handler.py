"""TorchServe handler: the service's trained LSTM served through TorchServe's sequence batching.

Runs inside a TorchServe worker (its own venv with torch and torchserve, not the service's), from
a model archive that ``bench/peer_torchserve.py`` builds out of the service's artifact:
``weights.npz`` as the serialized file and ``manifest.json`` as an extra file.

Per value it does the work ``POST /predict`` does for a value (forecast_core.session_step): look
up the sequence's state by its sequence id (the ``ts_request_sequence_id`` header), scale the
value (or, for a difference model, its difference from the sequence's last value) with the
manifest's min/max, one step of LSTM(units) with the trained weights, the Dense output, unscale,
store the new state and answer ``{"sequence_id": ..., "prediction": ...}`` as JSON.

Keras stores one LSTM bias and the kernels as (inputs, 4 * units) in gate order i, f, c, o;
torch.nn.LSTM keeps weight_ih (4 * units, inputs), weight_hh (4 * units, units) in gate order
i, f, g, o (the same order) and two biases that it adds: bias_ih takes Keras' bias, bias_hh zero.
Everything is float64, as the service computes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

# As forecast_core.lstm_step: the bound on a scaled input, and on a forecast (JSON has no inf).
SCALED_INPUT_BOUND = 1e150
FINITE_BOUND = 1.7976931348623157e308
WEIGHT_NAMES = ("lstm/kernel", "lstm/recurrent_kernel", "lstm/bias", "dense/kernel", "dense/bias")
DEFAULT_CAPACITY = 100_000
# Every this many requests, the mean batch size so far goes to the worker's stderr, which the
# frontend writes to the model log as a warning (so it passes bench/torchserve/log4j2.xml; the
# worker's logging goes to stdout, logged at INFO); 0 turns it off.
REPORT_EVERY = int(os.environ.get("LSTM_HANDLER_REPORT_EVERY", "5000"))


class StatefulLstmHandler:
    """One class in the module: TorchServe instantiates it and calls ``handle`` per batch."""

    def __init__(self) -> None:
        self.initialized = False
        self.units = 0
        self.minimum = 0.0
        self.span = 1.0
        self.difference = False
        self.shrink = 1.0
        self.capacity = DEFAULT_CAPACITY
        # sequence id -> state: h (units), c (units), then the last raw value (NaN before the
        # first one; only a difference model reads it). LRU order, oldest first.
        self.states: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.lstm: nn.LSTM | None = None
        self.dense: nn.Linear | None = None
        self.zero: torch.Tensor | None = None
        self.batches = 0
        self.requests = 0

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(1)
        model_dir = context.system_properties["model_dir"]
        manifest = _read_json(os.path.join(model_dir, "manifest.json"))
        weights_file = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        with open(weights_file, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        if digest != manifest["weights"]["sha256"]:
            raise RuntimeError(f"{weights_file} fails the manifest's sha256")
        with np.load(weights_file, allow_pickle=False) as archive:
            kernel, recurrent, bias, dense_kernel, dense_bias = (
                np.asarray(archive[name], dtype=np.float64) for name in WEIGHT_NAMES
            )
        units = recurrent.shape[0]
        lstm = nn.LSTM(input_size=1, hidden_size=units, batch_first=False, dtype=torch.float64)
        dense = nn.Linear(units, 1, dtype=torch.float64)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(torch.from_numpy(kernel.T))  # (4u, 1)
            lstm.weight_hh_l0.copy_(torch.from_numpy(recurrent.T))  # (4u, u)
            lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
            lstm.bias_hh_l0.zero_()  # Keras has one bias; torch adds both
            dense.weight.copy_(torch.from_numpy(dense_kernel.T))  # (1, u)
            dense.bias.copy_(torch.from_numpy(dense_bias))
        lstm.eval()
        dense.eval()
        self.lstm, self.dense, self.units = lstm, dense, units
        scaling = manifest["scaling"]
        self.minimum = float(scaling["minimum"])
        self.span = float(scaling["maximum"]) - self.minimum
        transform = manifest.get("transform", {"kind": "level"})
        self.difference = transform["kind"] == "difference"
        self.shrink = float(transform.get("shrink", 1.0))
        handler_config = (context.model_yaml_config or {}).get("handler") or {}
        self.capacity = int(handler_config.get("cache", {}).get("capacity", DEFAULT_CAPACITY))
        zero = torch.zeros(2 * units + 1, dtype=torch.float64)
        zero[-1] = math.nan
        self.zero = zero
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """One batch: at most one request per sequence (sequence batching), answered in order."""
        self.batches += 1
        self.requests += len(data)
        if REPORT_EVERY and self.requests % REPORT_EVERY < len(data):
            sys.stderr.write(
                f"batches {self.batches}, requests {self.requests}, mean batch size "
                f"{self.requests / self.batches:.2f}, sequences kept {len(self.states)}\n"
            )
            sys.stderr.flush()
        sequence_ids: list[str] = []
        values: list[float] = []
        answers: list[str] = [""] * len(data)
        rows: list[int] = []
        for index, row in enumerate(data):
            sequence_id = context.get_sequence_id(index)
            try:
                value = _value_of(row)
            except (KeyError, TypeError, ValueError) as error:
                context.set_response_status(400, "bad request", index)
                answers[index] = json.dumps(
                    {"error": f"body must be {{'value': <finite>}}: {error}"}
                )
                continue
            rows.append(index)
            sequence_ids.append(sequence_id)
            values.append(value)
        # Sequence batching never puts two requests of one sequence in a batch; should it, the
        # batch is split so that each sequence's values are applied in order.
        start = 0
        while start < len(rows):
            end, seen = start, set()
            while end < len(rows) and sequence_ids[end] not in seen:
                seen.add(sequence_ids[end])
                end += 1
            forecasts = self._step(sequence_ids[start:end], values[start:end])
            for offset, forecast in enumerate(forecasts):
                index = rows[start + offset]
                answers[index] = json.dumps(
                    {"sequence_id": sequence_ids[start + offset], "prediction": forecast}
                )
                context.set_response_content_type(index, "application/json")
            start = end
        return answers

    def _step(self, sequence_ids: list[str], values: list[float]) -> list[float]:
        with torch.inference_mode():
            return self._step_tensors(sequence_ids, values)

    def _step_tensors(self, sequence_ids: list[str], values: list[float]) -> list[float]:
        assert self.lstm is not None and self.dense is not None and self.zero is not None
        units = self.units
        states = torch.stack([self.states.get(sid, self.zero) for sid in sequence_ids])
        value = torch.tensor(values, dtype=torch.float64)
        last = states[:, 2 * units]
        if self.difference:
            first = torch.isnan(last)  # a sequence's first value only records it
            x = torch.where(first, torch.zeros_like(value), value - last)
        else:
            x = value
        scaled = ((x - self.minimum) / self.span).clamp(-SCALED_INPUT_BOUND, SCALED_INPUT_BOUND)
        h0 = states[:, :units].unsqueeze(0)
        c0 = states[:, units : 2 * units].unsqueeze(0)
        _, (h1, c1) = self.lstm(scaled.view(1, -1, 1), (h0.contiguous(), c0.contiguous()))
        output = self.dense(h1[0])[:, 0] * self.span + self.minimum
        new_states = torch.cat((h1[0], c1[0], value.unsqueeze(1)), dim=1)
        if self.difference:
            forecast = torch.where(first, value, value + self.shrink * output)
            new_states[first, : 2 * units] = 0.0
        else:
            forecast = output
        forecast = forecast.clamp(-FINITE_BOUND, FINITE_BOUND)
        for sid, state in zip(sequence_ids, new_states, strict=True):
            self.states[sid] = state
            self.states.move_to_end(sid)
        while len(self.states) > self.capacity:
            self.states.popitem(last=False)
        return [float(f) for f in forecast.tolist()]


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def _value_of(row: dict[str, Any]) -> float:
    body: Any = row.get("body")
    if body is None:
        body = row.get("data")
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8")
    if isinstance(body, str):
        body = json.loads(body)
    value = float(body["value"])
    if not math.isfinite(value):
        raise ValueError("value is not finite")
    return value
