"""The dashboard's routes, one module per page family, and the order they are mounted."""

from actors.http.ui.routes import catalog, jobs, overview, scans, session

__all__ = ["ROUTERS"]

#: Every router of the dashboard.
ROUTERS = [session.router, overview.router, jobs.router, scans.router, catalog.router]
