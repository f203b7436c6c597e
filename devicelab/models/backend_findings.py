"""What the backend checks read from the server and advise, beside the checks themselves:
the connections a load may open, and the indexes a report recommends."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConnectionRoom", "IndexRecommendation"]


class ConnectionRoom(BaseModel):
    """The connections a server has free for one role, read before a load opens its
    sessions. Limits are None where they do not bind (none set, or a superuser).

    Its JSON (``model_dump(mode="json")``) is a load check's ``evidence.connections``; the
    keys keep this order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(description="the server's max_connections")
    superuser_reserved_connections: int = Field(description="slots only superusers may use")
    reserved_connections: int = Field(
        description="slots for pg_use_reserved_connections members (PostgreSQL 16+; else 0)"
    )
    in_use: int = Field(description="client connections open, the one that read this excepted")
    role_limit: int | None = Field(description="the role's CONNECTION LIMIT")
    database_limit: int | None = Field(description="the database's CONNECTION LIMIT")
    free: int = Field(ge=0, description="the least of the server's, role's and database's room")


class IndexRecommendation(BaseModel):
    """One index a backend run suggests, once per DDL across its checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ddl: str = Field(description="the CREATE INDEX statement")
    proven: bool = Field(default=False, description="a hypothetical index lowered the cost")
    why: str = Field(default="", description="its proof, without the 'unproven: ' prefix")
    queries: list[str] = Field(default_factory=list, description="the queries it serves")
    checks: list[str] = Field(
        default_factory=list, description="ids of the checks that reported it"
    )
