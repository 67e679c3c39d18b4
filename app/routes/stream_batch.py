"""The messages of every ``/stream`` socket, applied together as a ``/predict/many`` request is.

Each socket has one message in flight (it reads the next only after answering this one), so
what many sockets sent at about the same time is waiting at once: one store call for all of them
(one SQLite transaction, two pipelined Redis round trips) costs far less than one call each. A
batch is applied while the next one gathers, so nothing waits on a timer: an idle service
applies a lone message at once, a busy one in batches as large as the sockets keep it.

A batch holds at most one message per session, so every message is applied as it would be on
its own (its step checked against the session as the previous message left it, a resend
replayed); a second message for the same session waits for the next batch, in its order.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from app.audit import Audit
from app.error_handlers import service_error_body
from app.errors import ServiceError
from app.routes.predict_many import Answer, predict_many
from app.schemas import PredictRequest
from app.services import ServicesHolder


class _Waiting(NamedTuple):
    key: str  # the session's store key (app.auth.session_key)
    body: PredictRequest
    answer: asyncio.Future[Answer]


class StreamBatcher:
    """Applies the messages of all sockets of one app in batches; one per app (built with the
    app's routes, so nothing is shared between apps)."""

    def __init__(self, holder: ServicesHolder, path: str, audit: Audit) -> None:
        self._holder = holder
        self._path = path
        self._audit = audit
        self._waiting: list[_Waiting] = []
        # The task applying batches while messages wait; None when none do. Kept here also
        # because the event loop holds only a weak reference to a task.
        self._applying: asyncio.Task[None] | None = None

    async def answer(self, key: str, body: PredictRequest) -> Answer:
        """The message's answer (/predict's, or the error in the one shape), once applied."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append(_Waiting(key, body, answer))
        if self._applying is None:
            # Started, not run: the sockets whose messages arrived with this one join first.
            self._applying = loop.create_task(self._apply_while_waiting())
        return await answer

    async def _apply_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    answers = await self._apply(batch)
                except BaseException as error:  # every waiting socket learns, none hangs
                    for waiting in batch:
                        if waiting.answer.done():
                            continue
                        if isinstance(error, Exception):
                            waiting.answer.set_exception(error)
                        else:  # cancelled with the event loop: so are the sockets' waits
                            waiting.answer.cancel()
                    if not isinstance(error, Exception):
                        raise
                    continue
                for waiting, answer in zip(batch, answers, strict=True):
                    if not waiting.answer.done():  # a socket gone meanwhile has cancelled it
                        waiting.answer.set_result(answer)
        finally:
            self._applying = None

    def _next_batch(self) -> list[_Waiting]:
        """Every waiting message, but only the first of each session's (the others keep their
        order and wait for the next batch)."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        taken: set[str] = set()
        for waiting in self._waiting:
            if waiting.answer.done():  # cancelled: the socket went away before its turn
                continue
            if waiting.key in taken:
                later.append(waiting)
            else:
                taken.add(waiting.key)
                batch.append(waiting)
        self._waiting = later
        return batch

    async def _apply(self, batch: list[_Waiting]) -> list[Answer]:
        refusals: list[ServiceError] = []
        try:
            services = self._holder.services
        except ServiceError as error:  # starting or stopping: every message's own answer
            refusal = service_error_body(error)
            refusals = [error] * len(batch)
            answers: list[Answer] = [refusal] * len(batch)
        else:
            bodies = [waiting.body for waiting in batch]
            answers = await predict_many(
                services,
                [waiting.key for waiting in batch],
                bodies,
                [body.levels for body in bodies],
                refusals,
            )
        for refusal_error in refusals:  # counted and logged as refused requests would be
            self._audit.refused(refusal_error, self._path)
        return answers
