"""Planner statistics of the job tables on PostgreSQL.

A claim's best plan is an ordered scan of the partial claim index that stops at its
LIMIT. On a large job table that was never analyzed (a restored database, or one after
``pg_upgrade``, which carries no statistics over, until autovacuum gets to it) the
planner reads every waiting job and sorts them at each claim instead, so a backlog
slows every claim down. A service starting on such a table analyzes it first.
"""

from __future__ import annotations

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.engine import Engine

from model.db.tables import JOB_TABLES

__all__ = ["MIN_PAGES", "analyze_unseen"]

#: Pages (8 kB each) from which a job table without statistics is analyzed at start;
#: below, the planner's guesses cost little.
MIN_PAGES = 1000

_UNSEEN = sa.text(
    "SELECT pg_relation_size(to_regclass(:table)) / current_setting('block_size')::int "
    "AS pages, EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() "
    "AND tablename = :table) AS seen"
)


def analyze_unseen(engine: Engine, min_pages: int = MIN_PAGES) -> list[str]:
    """PostgreSQL: runs ``ANALYZE`` on each job table of at least ``min_pages`` pages
    that has no statistics; returns their names (a database error is logged, and ends
    the pass). Other databases: nothing."""
    if engine.dialect.name != "postgresql":
        return []
    analyzed: list[str] = []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in JOB_TABLES:
                row = conn.execute(_UNSEEN, {"table": table}).one()
                if row.pages is not None and row.pages >= min_pages and not row.seen:
                    conn.exec_driver_sql(f"ANALYZE {table}")  # a name of JOB_TABLES
                    logger.info("table {} had no planner statistics: analyzed it", table)
                    analyzed.append(table)
    except sa.exc.DBAPIError as exc:
        # The service still runs on a database that cannot analyze now: claims slower.
        logger.warning("cannot analyze the job tables: {}", str(exc).splitlines()[0])
    return analyzed
