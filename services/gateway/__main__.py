"""Start the gateway process: ``python -m services.gateway`` (uvicorn on host:port).

Hardens the process first (offline env, egress guard), migrates the DB, makes sure the
admin account exists, then serves the app built by ``create_app``.
"""

from __future__ import annotations

import logging


def main() -> None:
    from services.egress_guard import harden_process
    from services.settings import Settings

    settings = Settings()
    harden_process(settings, "gateway")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s"
    )

    import uvicorn

    from services.db import make_engine, migrate, session_factory
    from services.gateway.app import create_app
    from services.gateway.auth_service import ensure_admin

    migrate(settings.resolved_database_url)
    generated = ensure_admin(
        session_factory(make_engine(settings.resolved_database_url)), settings.admin_password
    )
    if generated:
        print(
            f"enclave: created account 'admin' with password {generated} (shown once)", flush=True
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
