"""The store's writes of scan results (see :class:`ScanResults`)."""

from __future__ import annotations

from collections.abc import Sequence

from model.db._writer import Writer
from model.db.tables import ImgScanOverview, ScanFinding, utcnow

__all__ = ["ScanResults"]


class ScanResults:
    """The scan results' writes of :class:`~model.db.store.Store`."""

    _writer: Writer

    def save_scan_result(
        self,
        overview: ImgScanOverview,
        findings: Sequence[ScanFinding],
    ) -> None:
        """Upserts the overview of an image by digest and replaces its findings, in one
        transaction."""
        o = ImgScanOverview.__table__  # type: ignore[attr-defined]
        f = ScanFinding.__table__  # type: ignore[attr-defined]
        now = utcnow()
        with self._writer.transaction() as conn:
            updated = conn.execute(
                o.update()
                .where(o.c.image_digest == overview.image_digest)
                .values(
                    scan_job_id=overview.scan_job_id,
                    severity=overview.severity,
                    components_overview=overview.components_overview,
                    details_key=overview.details_key,
                    update_time=now,
                )
            ).rowcount
            if not updated:
                conn.execute(
                    o.insert().values(
                        image_digest=overview.image_digest,
                        scan_job_id=overview.scan_job_id,
                        severity=overview.severity,
                        components_overview=overview.components_overview,
                        details_key=overview.details_key,
                        creation_time=now,
                        update_time=now,
                    )
                )
            conn.execute(f.delete().where(f.c.image_digest == overview.image_digest))
            if findings:
                conn.execute(
                    f.insert(),
                    [finding.model_dump(exclude={"id"}) for finding in findings],
                )
