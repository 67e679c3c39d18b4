"""The messages of every ``/stream`` socket, applied together as a ``/predict/many`` request is.

Each socket has one message in flight (it reads the next only after answering this one), so
what many sockets sent at about the same time is waiting at once: one store call for all of them
(one SQLite transaction, or two: app.routes.predict_many; two Redis round trips) costs far less
than one call each. A batch is applied while the next one gathers, so nothing waits on a timer:
an idle service applies a lone message on its next turn, a busy one in batches as large as the
sockets keep it. Two batches may be applied at once, of other sessions each: while one waits on
the store (a commit, a round trip), the next is parsed and sent.

A batch holds at most as many messages as one ``/predict/many`` request may carry, and at most
one per session, so every message is applied as it would be on its own (its step checked
against the session as the previous message left it, a resend replayed); a second message for
the same session waits for the next batch, in its order. A refusal of a whole batch (the store
down) answers each of its messages; the sockets stay open.
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

# Batches applied at once at most (each of sessions the others do not hold).
_BATCHES_IN_FLIGHT = 2


class _Waiting(NamedTuple):
    key: str  # the session's store key (app.auth.session_key)
    body: PredictRequest
    answer: asyncio.Future[Answer]


class StreamBatcher:
    """Applies the messages of all sockets of one app in batches; one per app (built with the
    app's routes, so nothing is shared between apps)."""

    def __init__(self, holder: ServicesHolder, path: str, audit: Audit, max_batch: int) -> None:
        self._holder = holder
        self._path = path
        self._audit = audit
        # At most as many messages a batch as one /predict/many request may carry: the same
        # bound on one SQLite transaction or one Redis pipeline.
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        # The tasks applying batches while messages wait. Kept here also because the event
        # loop holds only a weak reference to a task.
        self._applying: set[asyncio.Task[None]] = set()
        # The sessions of the batches being applied: a message of one waits for the next batch.
        self._in_flight: set[str] = set()

    async def answer(self, key: str, body: PredictRequest) -> Answer:
        """The message's answer (/predict's, or the error in the one shape), once applied."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append(_Waiting(key, body, answer))
        # Tasks still running: one that ended this turn stays in the set until its callback
        # runs, a turn later, but will take no more messages.
        if sum(not task.done() for task in self._applying) < _BATCHES_IN_FLIGHT:
            # Started, not run: the sockets whose messages arrived with this one join first.
            task = loop.create_task(self._apply_while_waiting())
            self._applying.add(task)
            # A callback, not the task's own clean-up: a task cancelled before its first step
            # never runs that.
            task.add_done_callback(self._applying.discard)
        return await answer

    async def stop(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the batches being applied (at shutdown, before the
        store closes under them)."""
        if self._applying:
            await asyncio.wait(list(self._applying), timeout=timeout_s)

    async def _apply_while_waiting(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch = self._next_batch()
                if not batch:  # those left wait for sessions in flight: their task takes them
                    break
                keys = [waiting.key for waiting in batch]
                self._in_flight.update(keys)
                try:
                    answers = await self._apply(batch)
                except Exception as error:
                    # A bug: these sockets raise it, as a request would; the waiting ones go
                    # on. None is applied again: a retry could apply twice what was applied.
                    for waiting in batch:
                        if not waiting.answer.done():
                            waiting.answer.set_exception(error)
                    continue
                finally:
                    self._in_flight.difference_update(keys)
                for waiting, answer in zip(batch, answers, strict=True):
                    if not waiting.answer.done():  # a socket gone has cancelled its wait
                        waiting.answer.set_result(answer)
        except BaseException:  # the event loop stopping: no socket may wait for ever
            for waiting in [*batch, *self._waiting]:
                waiting.answer.cancel()
            self._waiting = []
            raise

    def _next_batch(self) -> list[_Waiting]:
        """The waiting messages in order, up to the batch limit, but only the first of each
        session's and none of a session in flight (the others keep their order and wait for
        the next batch)."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        taken = set(self._in_flight)
        for waiting in self._waiting:
            if waiting.answer.done():  # cancelled: the socket went away before its turn
                continue
            if waiting.key in taken or len(batch) == self._max_batch:
                later.append(waiting)
            else:
                taken.add(waiting.key)
                batch.append(waiting)
        self._waiting = later
        return batch

    async def _apply(self, batch: list[_Waiting]) -> list[Answer]:
        """The batch's answers. A refusal of the whole batch (the store down, the service
        stopping) answers each message with it, as each message's own request would have
        been answered; the sockets stay open and a client resends with its steps."""
        refusals: list[ServiceError] = []
        answers: list[Answer]
        try:
            services = self._holder.services
            bodies = [waiting.body for waiting in batch]
            answers = await predict_many(
                services,
                [waiting.key for waiting in batch],
                bodies,
                [body.levels for body in bodies],
                refusals,
            )
        except ServiceError as error:
            refusals = [error] * len(batch)
            answers = [service_error_body(error)] * len(batch)
        for refusal in refusals:
            self._audit.refused(refusal, self._path)  # as a refused request is
        return answers
