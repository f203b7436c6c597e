"""``devicelab backend serve``: the local Supabase-compatible reference backend.

Wired into the ``backend`` group by ``register_serve(backend_app)``. The work is in
``backend_checks.reference.serve``; this file only declares the options.
"""

from __future__ import annotations

import signal

import typer

from devicelab.cli.options import nonblank_dsn

__all__ = ["register_serve"]


def register_serve(backend_app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``backend`` Typer group."""

    @backend_app.command("serve")
    def serve(
        port: int | None = typer.Option(
            None,
            "--port",
            min=0,
            max=65535,
            help="port to listen on (default 54321 when free, else any free port; 0 = any)",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
        dsn: str | None = typer.Option(
            None,
            "--dsn",
            help="serve over this PostgreSQL instead of the managed one",
            callback=nonblank_dsn,
        ),
        allow_writes: bool = typer.Option(
            False,
            "--allow-writes",
            help="let it install devicelab's schema into the --dsn database and seed it"
            " (required unless that database holds this devicelab's schema already)",
        ),
    ) -> None:
        """Serve Auth, REST, Storage and Realtime like Supabase; prints SUPABASE_URL,
        SUPABASE_ANON_KEY and SUPABASE_SERVICE_ROLE_KEY once ready; stops on Ctrl-C."""
        from backend_checks.reference.serve import serve_forever

        stopped_by = serve_forever(host=host, port=port, dsn=dsn, allow_writes=allow_writes)
        if stopped_by == signal.SIGHUP:
            # Stopped as gracefully as by SIGTERM, but a hang-up is not a requested stop:
            # 128 + SIGHUP, as every devicelab command exits on one.
            typer.echo("devicelab: hung up (SIGHUP)", err=True)
            raise typer.Exit(128 + signal.SIGHUP)
