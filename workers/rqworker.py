"""The RQ worker class the Procfile runs: rq's forking worker, safe to kill.

``rq worker --with-scheduler`` forks its scheduler with ``multiprocessing`` (rq 2.12 and
3.0 alike). The child inherits every socket of the parent's Redis connection pool and,
since the worker object stays referenced on the forked stack, never closes them. The
parent later blocks on one of those sockets reading its queues (``BLPOP``). When the
parent is killed (SIGKILL, the OOM killer) the socket stays open in the orphaned
scheduler, so Redis still counts the read as waiting: it pops the next job and writes it
to a socket nobody reads. The job is in no queue and no registry, and is never run. The
orphan also keeps the scheduler lock, so the worker started in its place runs no
scheduler (delayed jobs and retries wait) for as long as the orphan lives.

:class:`Worker` fixes both in the scheduler process right after the fork: it closes
its copies of the parent's Redis sockets (the parent's own stay open; closing a copy
sends nothing to Redis) and watches its parent, stopping cleanly, locks released, when
the parent is gone. The work horses rq forks per job are left alone: they finish the job
they run.

``rq worker-pool`` forks its workers the same way, and starts each with a scheduler; a
pool killed outright would leave them running beside the pool started in its place.
:class:`PooledWorker` has the same fix for its scheduler, and finishes its current job
and stops when the pool is gone.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import signal
import threading
from typing import Any

import rq
from redis import Redis

logger = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5
"""How often the scheduler checks that the worker that forked it is still alive."""


class _SchedulerDropsParentSockets:
    """Mixin for rq worker classes: the scheduler they fork cannot take jobs or linger."""

    connection: Redis

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pid = os.getpid()
        # Runs in processes started with multiprocessing from this one (the scheduler),
        # not in the work horses rq forks with os.fork.
        multiprocessing.util.register_after_fork(self, type(self)._in_forked_scheduler)

    def _in_forked_scheduler(self) -> None:
        """Drop the parent's Redis sockets and follow the parent's death."""
        pool = self.connection.connection_pool
        inherited = [*pool._available_connections, *pool._in_use_connections]
        for connection in inherited:
            # In another process than the one that opened it, redis-py only closes the
            # descriptor (no shutdown), so the parent's connection is untouched.
            connection.disconnect()
        _watch_parent(self._pid)


class Worker(_SchedulerDropsParentSockets, rq.Worker):
    """``rq worker -w workers.rqworker.Worker``: a scheduler child that cannot take jobs."""


class PooledWorker(_SchedulerDropsParentSockets, rq.SimpleWorker):
    """``rq worker-pool -w workers.rqworker.PooledWorker``: each pooled worker runs with
    a scheduler too (rq starts them so); it also stops when its pool dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _watch_parent(os.getppid())


def _watch_parent(parent: int) -> None:
    """Watch ``parent`` from a daemon thread of this process (see :func:`_stop_when_orphaned`)."""
    threading.Thread(
        target=_stop_when_orphaned, args=(parent,), name="parent-watch", daemon=True
    ).start()


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this process once ``parent`` has died: a scheduler stops, releasing its
    locks; a pooled worker finishes its job and stops. Neither may outlive its parent."""
    while os.getppid() == parent:
        threading.Event().wait(PARENT_CHECK_S)
    logger.warning("process %s died: its child %s stops", parent, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
