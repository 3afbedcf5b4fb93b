"""The builtin scanner: no server, layers read in this process.

- :mod:`model.scan.builtin.backend` — the scan job's ``builtin`` backend: layers streamed
  from the registry, their packages matched against the vulnerability database.
- :mod:`model.scan.builtin.vulndb` — the vulnerability database, loaded once and kept
  while its files do not change.

Its library (no jobs, no database):

- :mod:`model.scan.builtin.versions` — version ordering per ecosystem (dpkg, apk, PEP 440).
- :mod:`model.scan.builtin.severity` — Harbor 1.4's severity scale, CVSS v3 base scores.
- :mod:`model.scan.builtin.osv` — an OSV vulnerability database and range evaluation.
- :mod:`model.scan.builtin.packages` — installed packages streamed out of image layers.
- :mod:`model.scan.builtin.tarstream` — the members of a (gzip/zstd) tar stream.
- :mod:`model.scan.builtin.summary` — findings and Harbor 1.4's ``components_overview``.
- :mod:`model.scan.builtin.errors` — the scanner's errors.

The other backends (``adapter``, ``clair``) use the severity scale and the summary too.
"""

from __future__ import annotations

__all__: list[str] = []
