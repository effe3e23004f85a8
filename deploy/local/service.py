"""What every service of the local stack offers: provision, start, check, stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentlog.deploy.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    healthy: bool
    version: str | None = None
    managed: bool = False
    detail: str = ""
    authentication: str | None = None
    """How clients must prove who they are (``scram-sha-256``, ``SASL/SCRAM-SHA-512``…); None: nobody asks."""
    tls: bool = False
    """Whether clients speak TLS to it."""
    nodes: list[dict[str, object]] = field(default_factory=list)
    """A clustered service's nodes: ``id``, ``address``, ``pid``, ``healthy`` and what each ``leads``."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Service(ABC):
    """One service. ``up`` is idempotent: a service that already answers is used, not started twice."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def home(self) -> Path:
        """This service's data directory under the stack directory."""
        return self.settings.stack_dir / self.name

    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def status(self) -> ServiceStatus: ...

    @abstractmethod
    def up(self) -> ServiceStatus:
        """Provision (download once), start and wait until healthy; return the healthy status."""

    @abstractmethod
    def down(self) -> bool:
        """Stop what the stack started; True if something was stopped. Data stays."""
