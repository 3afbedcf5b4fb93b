"""The built-in vulnerability scanner's library: no jobs, no database.

- :mod:`model.scanner.versions` — version ordering per ecosystem (dpkg, apk, PEP 440).
- :mod:`model.scanner.severity` — Harbor 1.4's severity scale, CVSS v3 base scores.
- :mod:`model.scanner.osv` — an OSV vulnerability database and range evaluation.
- :mod:`model.scanner.packages` — installed packages streamed out of image layers.
- :mod:`model.scanner.summary` — findings and Harbor 1.4's ``components_overview``.
- :mod:`model.scanner.errors` — the scanner's errors.
"""

from __future__ import annotations

__all__: list[str] = []
