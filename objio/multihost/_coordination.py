"""Agreement between the processes of one save, through JAX's coordination service.

Every process of a ``jax.distributed`` job is connected to the coordination service's key-value
store. One save uses a few keys under ``objio/multihost/<n>/`` (``n`` counts this process's saves,
the same in every process because they all save in the same order):

- ``save_id``: process 0 picks the save's id (the parts' folder); the others wait for it;
- ``status/<p>``: process ``p`` reports ``ok`` once its part is committed, or why it failed;
- ``outcome``: process 0 reports ``committed`` once the commit object is written, or why not.

Every wait has a timeout, so a process that is killed makes the others fail, never hang. Without
``jax.distributed`` (one process) nothing is exchanged.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import Any

import jax

from objio.errors import ObjectExistsError, ObjioError

OK = "ok"
COMMITTED = "committed"
_PREFIX = "objio/multihost"
_save_numbers = itertools.count()


class SaveAbortedError(ObjioError, RuntimeError):
    """A multi-process save did not commit, because this or another process failed or timed out.

    Nothing became visible at the checkpoint's key. The parts already written are removed by the next
    save of the same key or by :func:`objio.multihost.delete_uncommitted`.
    """


def _client() -> Any:
    """The coordination service's client, or None without ``jax.distributed``.

    JAX has no public route to the key-value store (multihost_utils offers only a barrier and
    broadcasts that run a computation on the devices), so this reads the documented-by-use global
    state that Orbax also relies on.
    """
    from jax._src import distributed

    return distributed.global_state.client


class SaveCoordinator:
    """The keys and waits of one save, seen from this process."""

    def __init__(self, where: str, timeout_s: float) -> None:
        self.where = where
        self.process = jax.process_index()
        self.process_count = jax.process_count()
        self._client: Any = _client() if self.process_count > 1 else None
        self._timeout_ms = max(1, int(timeout_s * 1000))
        self._number = next(_save_numbers)
        self._prefix = f"{_PREFIX}/{self._number}"

    def _get(self, name: str, waiting_for: str, timeout_ms: int, consequence: str = "nothing was committed") -> str:
        try:
            return str(self._client.blocking_key_value_get(f"{self._prefix}/{name}", max(1, timeout_ms)))
        except Exception as e:  # noqa: BLE001 - jaxlib raises its own runtime error type for a timeout
            raise SaveAbortedError(
                f"multi-process save of {self.where}: {waiting_for} did not answer within timeout_s="
                f"{self._timeout_ms / 1000:g} s ({e}); {consequence}. If the process is alive but slow, raise timeout_s"
            ) from e

    def _set(self, name: str, value: str) -> None:
        self._client.key_value_set(f"{self._prefix}/{name}", value)

    def agree_on_save_id(self) -> str:
        """A fresh id for this save, the same in every process."""
        if self._client is None:
            return secrets.token_hex(8)
        if self.process == 0:
            save_id = secrets.token_hex(8)
            self._set("save_id", save_id)
            return save_id
        return self._get("save_id", "process 0 (the save's id)", self._timeout_ms)

    def report(self, status: str) -> None:
        """Tell process 0 that this process's part is committed (``OK``) or why it is not."""
        if self._client is not None:
            self._set(f"status/{self.process}", status)

    def gather(self) -> dict[int, Any]:
        """Process 0: wait (up to ``timeout_s`` in all) for every process's status; raise at the first failure."""
        statuses: dict[int, Any] = {}
        deadline = time.monotonic() + self._timeout_ms / 1000
        for process in range(1, self.process_count):
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            status = self._get(f"status/{process}", f"process {process}", remaining_ms)
            if status.startswith(ObjectExistsError.__name__):  # it found the checkpoint already there
                raise ObjectExistsError(f"{self.where} already exists and this save is create-only", self.where)
            if not status.startswith(OK):
                raise SaveAbortedError(f"multi-process save of {self.where}: process {process} failed: {status}")
            statuses[process] = json.loads(status[len(OK) :] or "null")
        if self._client is not None and self._number:
            # Every process has reported on this save, so none still waits on the previous one's keys.
            self._client.key_value_delete(f"{_PREFIX}/{self._number - 1}")
        return statuses

    def announce(self, outcome: str) -> None:
        """Process 0: tell everyone whether the checkpoint is committed."""
        if self._client is not None:
            self._set("outcome", outcome)

    def wait_for_outcome(self) -> str:
        """A process other than 0: wait until process 0 says whether the checkpoint is committed."""
        # Process 0 may wait up to timeout_s for the slowest part after finishing its own, so wait longer.
        return self._get(
            "outcome", "process 0 (the commit)", 2 * self._timeout_ms, "the checkpoint may or may not be committed"
        )
