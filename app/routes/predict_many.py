"""``POST /predict/many``: values of many sessions in one request, applied by the store at once."""

# No ``from __future__ import annotations`` here: FastAPI reads the body type of this route,
# built from the settings when the app is built, from its annotation at definition time.

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from app.audit import Audit
from app.auth import caller_namespace, session_key
from app.error_handlers import service_error_body
from app.errors import ServiceError, StepConflict
from app.model_registry import ServedModel
from app.rate_limit import charge_more
from app.responses import JsonBytesResponse, JsonLineResponse
from app.routes.forecasting import prediction_answer, settle
from app.schemas import (
    ErrorAnswer,
    ErrorResponse,
    PredictManyRequest,
    PredictManyResponse,
    PredictResponse,
    RequestBodies,
)
from app.services import Services, ServicesHolder
from app.session_rows import Stepped
from app.session_rules import FeedOutcome, ReplayOffEventLoop, SessionRecord, feed_items
from app.stores.base import Compute, apply_each

# Above this many items, the LSTM steps run in a worker thread: about 4 µs an item (README,
# "Benchmarks"), so a request of this size holds the event loop well under a millisecond.
INLINE_ITEMS = 128
# The request's status when some item was refused: each result says which and why.
SOME_ITEMS_REFUSED = 207

Answer: TypeAlias = PredictResponse | ErrorAnswer


class FeedItem(Protocol):
    """One value for one session: a /predict/many item, or a /stream message."""

    @property
    def session_id(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def step(self) -> int | None: ...
    @property
    def model(self) -> str | None: ...


def _group(keys: Sequence[str]) -> dict[str, list[int]]:
    """Item positions by session store key (session and model), in request order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        positions = groups.get(key)
        if positions is None:
            groups[key] = [index]
        else:
            positions.append(index)
    return groups


# One session's feed: the outcome and how many of its items it applied; None when a model
# change needs a replay too long for the event loop (nothing written: computed again off it).
Fed: TypeAlias = tuple[FeedOutcome, int] | None


def _feeder(
    served: ServedModel,
    values: Sequence[float],
    steps: Sequence[int | None],
    now: float,
    history: int,
    inline: bool,
) -> Compute[Fed]:
    """The store's compute for one session's items: session_rules' feed, as /predict's."""
    forecaster = served.require()
    policy = served.intervals

    def compute(record: SessionRecord | None) -> tuple[SessionRecord | None, Fed]:
        try:
            return feed_items(
                record, forecaster, policy, values, steps, now, history=history, inline=inline
            )
        except ReplayOffEventLoop:
            return None, None

    return compute


class _Group(NamedTuple):
    positions: list[int]
    served: ServedModel
    values: Sequence[float]
    steps: Sequence[int | None]


class _Singles(NamedTuple):
    """One model's sessions that have one item each, for the store's in-place feed."""

    served: ServedModel
    keys: list[str]
    positions: list[int]
    values: list[float]
    steps: list[int | None]


def _one_model_singles(
    services: Services, keys: Sequence[str], items: Sequence[FeedItem]
) -> _Singles | None:
    """The request's items when each names another session of one model that is served (the
    common request, fed in place at once); None otherwise."""
    if not items or len(set(keys)) != len(keys):
        return None
    model = items[0].model
    for item in items:
        if item.model != model:
            return None
    try:
        served = services.models.get(model)
        served.require()
    except ServiceError:  # refused item by item
        return None
    return _Singles(
        served,
        list(keys),
        list(range(len(keys))),
        [item.value for item in items],
        [item.step for item in items],
    )


async def predict_many(
    services: Services,
    keys: Sequence[str],
    items: Sequence[FeedItem],
    levels: Sequence[Sequence[float] | None],
    refusals: list[ServiceError] | None = None,
) -> list[Answer]:
    """Each item's answer, in order; items of one session (and model) applied as one feed, in
    order, with the history window and model-change replay of /predict. ``keys``: each item's
    session store key (app.auth.session_key); ``levels``: the interval levels each item's
    answer carries. ``refusals`` gets each session's refusal (one per session, as its own
    /predict request would have had)."""
    refused = refusals if refusals is not None else []
    now = services.clock()
    history = services.settings.session_history
    store = services.store
    offload = len(items) > INLINE_ITEMS
    inline = not offload and not store.computes_off_event_loop
    in_place = services.in_place if not offload else None
    answers: list[Any] = [None] * len(items)
    work: list[tuple[str, Compute[Fed]]] = []
    groups: list[_Group] = []
    # Sessions with one item each, by model name: stepped in place where the store can.
    by_model: dict[str | None, _Singles] = {}
    common = _one_model_singles(services, keys, items) if in_place is not None else None
    stepped_in_place = False
    if common is not None:  # the common request: no grouping needed
        by_model[None] = common
    for key, positions in _group(keys).items() if common is None else ():
        if in_place is not None and len(positions) == 1:
            position = positions[0]
            item = items[position]
            singles = by_model.get(item.model)
            if singles is None:
                try:
                    served = services.models.get(item.model)
                    served.require()
                except ServiceError as error:  # an unknown model, or none loaded
                    _refuse(items, positions, answers, error, refused)
                    continue
                singles = by_model[item.model] = _Singles(served, [], [], [], [])
            singles.keys.append(key)
            singles.positions.append(position)
            singles.values.append(item.value)
            singles.steps.append(item.step)
            continue
        if len(positions) == 1:  # no lists to build
            item = items[positions[0]]
            values: Sequence[float] = (item.value,)
            steps: Sequence[int | None] = (item.step,)
        else:
            values = [items[index].value for index in positions]
            steps = [items[index].step for index in positions]
        try:
            served = services.models.get(items[positions[0]].model)
            compute = _feeder(served, values, steps, now, history, inline)
        except ServiceError as error:  # an unknown model, or none loaded: these items only
            _refuse(items, positions, answers, error, refused)
            continue
        work.append((key, compute))
        groups.append(_Group(positions, served, values, steps))
    for singles in by_model.values():
        assert in_place is not None
        served = singles.served
        try:
            stepped = await in_place.feed_in_place(
                singles.keys,
                singles.values,
                singles.steps,
                served.require(),
                served.intervals,
                history,
                now,
            )
        except ServiceError as error:
            if not stepped_in_place:
                raise  # nothing applied: the whole request is refused, as a /predict would be
            # Another model's sessions are applied: these items only are refused, so the
            # answers say which items applied (as for a failure of the record path below).
            for position in singles.positions:
                _refuse(items, [position], answers, error, refused)
            continue
        _answer_in_place(services, served, items, levels, singles.positions, stepped, answers)
        stepped_in_place = stepped_in_place or bool(stepped.indexes)
        done = set(stepped.indexes)
        for index in range(len(singles.keys)):
            if index in done:
                continue
            # The record path's: new, retried, another model ...
            value, step = singles.values[index], singles.steps[index]
            compute = _feeder(served, (value,), (step,), now, history, inline)
            work.append((singles.keys[index], compute))
            groups.append(_Group([singles.positions[index]], served, (value,), (step,)))
    if by_model and len(work) > 1:
        # In request order, as without the in-place feed: new sessions are created in this
        # order, so the cap and the quotas go to the same sessions.
        order = sorted(range(len(work)), key=lambda index: groups[index].positions[0])
        work = [work[index] for index in order]
        groups = [groups[index] for index in order]
    try:
        outcomes = await store.apply_many(work, offload=offload)
    except ServiceError as error:
        if not stepped_in_place:
            raise  # nothing applied: the whole request is refused, as a /predict would be
        # The sessions stepped in place are applied (a store of its own transactions, as
        # SQLite's): the others are refused each, so the answers say which items applied.
        outcomes = [error] * len(work)
    again = [index for index, result in enumerate(outcomes) if result is None]
    if again:  # long replays after a model change: those sessions again, in worker threads
        redo = [
            (
                work[i][0],
                _feeder(groups[i].served, groups[i].values, groups[i].steps, now, history, False),
            )
            for i in again
        ]
        outcomes = list(outcomes)
        for index, result in zip(again, await apply_each(store, redo, offload=True), strict=True):
            outcomes[index] = result
    for group, result in zip(groups, outcomes, strict=True):
        _answer(services, items, levels, group, result, answers, refused)
    return answers


def _answer(
    services: Services,
    items: Sequence[FeedItem],
    levels: Sequence[Sequence[float] | None],
    group: _Group,
    result: Fed | ServiceError,
    answers: list[Any],
    refused: list[ServiceError],
) -> None:
    """Each item of one session's group: its answer or its refusal."""
    positions, served = group.positions, group.served
    if isinstance(result, ServiceError):
        _refuse(items, positions, answers, result, refused)
        return
    assert result is not None  # computed in a worker thread: no replay is too long there
    outcome, applied = result
    if applied == 1:  # the common case: the whole outcome is this item's
        index = positions[0]
        flags = settle(services, served, group.values[:1], outcome)
        answers[index] = prediction_answer(
            served,
            items[index].session_id,
            outcome,
            0,
            outcome.offsets,
            flags[0],
            levels[index],
        )
    else:
        adapted = served.intervals.layout.levels
        flags = settle(services, served, group.values[:applied], outcome)
        for position in range(applied):
            index = positions[position]
            offsets = outcome.offsets[position * adapted : (position + 1) * adapted]
            answers[index] = prediction_answer(
                served, items[index].session_id, outcome, position, offsets,
                flags[position], levels[index],
            )  # fmt: skip
    if applied < len(positions):
        stopped = positions[applied]
        sent = items[stopped].step
        assert sent is not None  # a feed stops only at an item that sent a step
        answers[stopped] = service_error_body(StepConflict(sent, outcome.step))
        _behind(positions[applied + 1 :], answers, outcome.step)


def _answer_in_place(
    services: Services,
    served: ServedModel,
    items: Sequence[FeedItem],
    levels: Sequence[Sequence[float] | None],
    positions: list[int],
    stepped: Stepped,
    answers: list[Any],
) -> None:
    """The answers of the sessions the store stepped in place (one item each): those of
    :func:`_answer` for a feed of one value, counted in metrics as ``settle`` counts them."""
    policy = served.intervals
    name, version = served.name, served.require().version
    flags_of, intervals_of = policy.flags, policy.intervals
    all_flags: list[list[str]] = []
    for index, prediction, step, offsets, intervals, missed in zip(
        stepped.indexes, stepped.predictions, stepped.steps, stepped.offsets, stepped.intervals,
        stepped.misses, strict=True,
    ):  # fmt: skip
        position = positions[index]
        item = items[position]
        flags = flags_of(item.value, missed)
        all_flags.append(flags)
        asked = levels[position]
        answer: PredictResponse = {
            "session_id": item.session_id,
            "model": name,
            "prediction": prediction,
            "step": step,
            "model_version": version,
            "replayed": False,
            "previous_model_version": None,
            "warmup_values": None,
            "intervals": intervals if asked is None else intervals_of(prediction, offsets, asked),
            "flags": flags,
        }
        answers[position] = answer
    metrics = services.metrics
    metrics.count_steps(len(stepped.indexes))
    if policy.calibration is not None:
        span = policy.training_span
        metrics.forecasts.observe_many(
            [error / span for error in stepped.errors],
            stepped.misses,
            policy.level_labels,
            all_flags,
        )


def _refuse(
    items: Sequence[FeedItem],
    positions: list[int],
    answers: list[Any],
    error: ServiceError,
    refused: list[ServiceError],
) -> None:
    """A session's items when its feed was refused: the first gets the refusal; after a step
    conflict, the others say they were not applied and where the session is."""
    refused.append(error)
    answers[positions[0]] = service_error_body(error)
    if isinstance(error, StepConflict):
        _behind(positions[1:], answers, error.details["expected_step"])
    else:
        for index in positions[1:]:
            answers[index] = answers[positions[0]]


def _behind(positions: Sequence[int], answers: list[Any], session_step: int) -> None:
    for index in positions:
        answers[index] = service_error_body(StepConflict.behind_refused(session_step))


def predict_many_router(
    holder: ServicesHolder, bodies: RequestBodies, route_class: type[APIRoute], audit: Audit
) -> APIRouter:
    """``POST /predict/many``, bound to the app's services and its item limit; ``audit`` counts
    and logs the items' refusals as it does refused requests."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["forecasting"],
        responses={status: {"model": ErrorResponse} for status in (400, 401, 413, 422, 429, 503)},
    )
    if TYPE_CHECKING:
        PredictManyBody: TypeAlias = PredictManyRequest
    else:
        PredictManyBody = bodies.predict_many

    @router.post(
        "/predict/many",
        response_model=PredictManyResponse,
        responses={
            SOME_ITEMS_REFUSED: {
                "model": PredictManyResponse,
                "description": "some items were refused: their results are errors",
            }
        },
    )
    async def predict_many_route(body: PredictManyBody, request: Request) -> JsonBytesResponse:
        """Feed values of many sessions in one request; one result per item, in order.

        200 when every item was applied (or replayed), 207 when some item was refused (its
        result is the error, in the one shape); the other items are applied all the same.
        """
        # Each item is a /predict: the key's rate limit counts items, not requests.
        charge_more(request.scope, len(body.items) - 1)
        refusals: list[ServiceError] = []
        namespace = caller_namespace(request.scope)
        items = body.items
        keys = [session_key(namespace, item.session_id, item.model) for item in items]
        answers = await predict_many(
            holder.services, keys, items, [body.levels] * len(items), refusals
        )
        for refusal in refusals:
            audit.refused(refusal, request.url.path)
        refused = any("error" in answer for answer in answers)
        response: PredictManyResponse = {"results": answers}
        return JsonBytesResponse(response, status_code=SOME_ITEMS_REFUSED if refused else 200)

    return router
