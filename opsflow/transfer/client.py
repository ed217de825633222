"""The transfer client: how a consumer asks a provider for an experiment's files and follows
the transfer. A small protocol, so that the Prefect client (start the provider's deployment,
read its flow run) and an in-process client for tests and single-machine use are equal."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from opsflow.transfer.records import SyncedExperiment


class Phase(enum.StrEnum):
    PENDING = "pending"  # accepted, not started
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # ended with an error; `permanent` says whether a retry can help
    UNKNOWN = "unknown"  # the provider has no such run (lost, or removed by retention)


@dataclass(frozen=True)
class RunStatus:
    phase: Phase
    message: str = ""
    permanent: bool = False


class ProviderUnavailable(Exception):
    """The provider cannot be reached now; the request or status is retried later."""


class PermanentTransferError(Exception):
    """The provider cannot ever transfer this (unknown experiment, files gone from its store)."""


@dataclass(frozen=True)
class TransferRequest:
    uid: str
    site: str
    destination: str
    idempotency_key: str  # the same key twice yields the same run (safe resubmission)


class TransferClient(Protocol):
    def request(self, request: TransferRequest) -> str:
        """Ask the provider to copy the files; returns the handle of its transfer run."""
        ...

    def statuses(self, handles: Sequence[str]) -> dict[str, RunStatus]:
        """The status of many runs in one call (a tick reads hundreds at once)."""
        ...


def request_for(experiment: SyncedExperiment) -> TransferRequest:
    # Unique across stores sharing one Prefect server (Prefect keys runs per flow, and a
    # re-registered experiment starts counting again): the registration time is part of it.
    born = f"{experiment.created_at.timestamp():.6f}"
    key = f"transfer:{experiment.site}:{experiment.uid}:{born}:{experiment.requests + 1}"
    return TransferRequest(experiment.uid, experiment.site, experiment.destination, key)


TransferRunner = Callable[[Session, TransferRequest], str]


class InProcessTransferClient:
    """Runs the provider's transfer in this process, at request time, and remembers outcomes.

    `run` does the transfer (for the provider: `transfer_experiment_files` over the site's
    transport) and returns a summary; `open_provider` opens a session on the provider's store,
    and a provider store that cannot be reached makes the request fail as temporary.
    """

    def __init__(self, open_provider: Callable[[], Session],
                 run: Callable[[Session, TransferRequest], str]) -> None:
        self.open_provider = open_provider
        self.run = run
        self.outcomes: dict[str, RunStatus] = {}

    def request(self, request: TransferRequest) -> str:
        from sqlalchemy.exc import OperationalError

        if request.idempotency_key in self.outcomes:
            return request.idempotency_key
        try:
            with self.open_provider() as session:
                summary = self.run(session, request)
                session.commit()
        except OperationalError as exc:
            raise ProviderUnavailable(f"provider store unreachable: {exc.orig}") from None
        except PermanentTransferError as exc:
            self.outcomes[request.idempotency_key] = RunStatus(Phase.FAILED, str(exc), True)
        except Exception as exc:  # noqa: BLE001 - a failed run is a status, as in Prefect
            self.outcomes[request.idempotency_key] = RunStatus(
                Phase.FAILED, f"{type(exc).__name__}: {exc}")
        else:
            self.outcomes[request.idempotency_key] = RunStatus(Phase.COMPLETED, summary)
        return request.idempotency_key

    def statuses(self, handles: Sequence[str]) -> dict[str, RunStatus]:
        return {h: self.outcomes.get(h, RunStatus(Phase.UNKNOWN, "no such run")) for h in handles}
