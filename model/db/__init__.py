"""The database: the :class:`Store` facade (the only class that talks to it), its
tables (:mod:`model.db.tables`) and their migrations (:mod:`model.db.migrations`).

Inside: :mod:`model.db._sql` holds the job tables' SQL statements that run as text,
built once per dialect, and :mod:`model.db._sql_nodes` the node table's;
:mod:`model.db._writer` the SQLite group-commit writer and the PostgreSQL writer
(:mod:`model.db._mysql` MySQL's, :mod:`model.db._open` picks one); :mod:`model.db._health`
the checks that the database can still take a write; :mod:`model.db.dashboard` the
dashboard's reads.
"""

from __future__ import annotations

from model.db._sql import Guard
from model.db.store import Store
from model.status import ALLOWED_FROM

__all__ = ["ALLOWED_FROM", "Guard", "Store"]
