"""The baseline for the serving benchmark: a trivial FastAPI endpoint, no model, no store.

It takes the same JSON body as /predict and answers a constant, so the difference in throughput
is what the forecast service adds: validation, session state, the LSTM step, metrics.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def trivial(body: dict[str, Any]) -> dict[str, Any]:
    """Answer a constant."""
    return {"prediction": 0.0}
