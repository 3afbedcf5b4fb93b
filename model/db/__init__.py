"""The database: the :class:`Store` facade (the only class that talks to it), its
tables (:mod:`model.db.tables`) and their migrations (:mod:`model.db.migrations`).

Inside: :mod:`model.db._sql` holds every SQL statement the store runs as text, built
once per dialect; :mod:`model.db._writer` the SQLite group-commit writer and the
PostgreSQL writer; :mod:`model.db._health` the checks that the database can still
take a write.
"""

from __future__ import annotations

from model.db._sql import Guard
from model.db.store import Store
from model.status import ALLOWED_FROM

__all__ = ["ALLOWED_FROM", "Guard", "Store"]
