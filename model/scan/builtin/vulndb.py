"""The builtin scanner's vulnerability database, loaded once and shared by the scan
workers of a service until its files change."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from model.scan.builtin.errors import VulnDBError
from model.scan.builtin.osv import VulnDB

__all__ = ["VulnDBCache", "database_signature"]


def database_signature(path: Path) -> str:
    """A digest of the name, size and modification time of every file of the database at
    ``path`` (a folder, walked, or a file): it changes when any record file does.

    Raises :class:`VulnDBError` when ``path`` does not exist or cannot be listed.
    """
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            for root, dirs, files in os.walk(path, onerror=_raise):
                dirs.sort()
                for name in sorted(files):
                    stat = os.stat(os.path.join(root, name))
                    rel = os.path.relpath(os.path.join(root, name), path)
                    digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}".encode())
    except FileNotFoundError:
        raise VulnDBError(str(path), "no such file or directory") from None
    except OSError as exc:
        raise VulnDBError(str(path), f"cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _raise(exc: OSError) -> None:
    raise exc


class VulnDBCache:
    """The last database loaded, per path, kept while its signature holds.

    Thread-safe: the scan workers (one thread each) share one cache, and a database
    is loaded by one of them while the others wait for it, not loaded three times.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, VulnDB]] = {}
        #: Databases loaded so far (for tests and statistics).
        self.loads = 0

    def get(self, path: Path) -> tuple[VulnDB, bool]:
        """The database at ``path`` and whether it was (re)loaded by this call.

        Raises :class:`VulnDBError` naming the path when it cannot be read.
        """
        key = str(path.resolve())
        with self._lock:
            signature = database_signature(path)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == signature:
                return entry[1], False
            # Only the newest database is kept: an old one would only hold memory.
            self._entries.pop(key, None)
            db = VulnDB.load(path)
            self._entries[key] = (signature, db)
            self.loads += 1
            return db, True
