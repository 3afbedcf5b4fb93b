"""Scans: the scanned images, a form to scan one, and an image's findings (severity
counts as a bar, a sortable table, each id linking to its advisory)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from actors.http.schemas import DIGEST_PATTERN, REPOSITORY_PATTERN, TAG_PATTERN
from actors.http.ui._deps import FormDep, PagesDep, ServiceDep, logged_in
from actors.http.ui._render import SEVERITIES, redirect
from model.db.dashboard import scanned_images, severity_counts
from model.db.tables import ImgScanOverview, ScanFinding
from model.replication import source_registry

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(logged_in)])

Digest = Annotated[str, Path(pattern=DIGEST_PATTERN)]

#: How the findings table sorts, by the ``sort`` parameter: a key per finding.
_SORTS: dict[str, Any] = {
    "severity": lambda f: (-f.severity, f.package, f.vulnerability_id),
    "package": lambda f: (f.package, -f.severity, f.vulnerability_id),
    "id": lambda f: (f.vulnerability_id, f.package),
    "installed": lambda f: (f.version, f.package),
    "fixed": lambda f: (f.fixed_version or "\uffff", f.package),
}


@router.get("/scans")
def scans(request: Request, pages: PagesDep, service: ServiceDep) -> Response:
    """The scanned images, newest first, and the scan form."""
    return pages.render(
        request, "scans.html", images=scanned_images(service.store), errors={}, values={}
    )


@router.post("/scans")
def scan(request: Request, pages: PagesDep, service: ServiceDep, form: FormDep) -> Response:
    """Queues a scan of ``repository:tag`` (which must be in the source registry)."""
    values = {"repository": form.get("repository"), "tag": form.get("tag")}
    errors: dict[str, str] = {}
    if not re.match(REPOSITORY_PATTERN, values["repository"]):
        errors["repository"] = "repository: a name like library/app (lower case, / between parts)"
    if not re.match(TAG_PATTERN, values["tag"]):
        errors["tag"] = "tag: letters, digits, '_', '.' or '-', at most 128"
    if not errors:
        with source_registry(service.settings) as client:
            digest = client.manifest_digest(values["repository"], values["tag"])
        if digest is None:
            errors["tag"] = (
                f"tag: {values['repository']}:{values['tag']} is not in the source registry"
            )
        else:
            job_id = service.scan(values["repository"], values["tag"], digest)
            return redirect(f"/ui/jobs/scan/{job_id}")
    images = scanned_images(service.store)
    return pages.render(request, "scans.html", 400, images=images, errors=errors, values=values)


@router.get("/scans/{digest}")
def image(
    request: Request,
    pages: PagesDep,
    service: ServiceDep,
    digest: Digest,
    sort: str = "severity",
) -> Response:
    """An image's latest scan: severity counts and its findings, sorted by ``sort``
    (severity, package, id, installed, fixed)."""
    overviews = service.store.list_rows(ImgScanOverview, image_digest=digest)
    if not overviews:
        return pages.render(
            request, "problem.html", 404, status=404, message=f"image {digest} is not scanned"
        )
    sort = sort if sort in _SORTS else "severity"
    findings = sorted(service.store.list_rows(ScanFinding, image_digest=digest), key=_SORTS[sort])
    counts = severity_counts(service.store, digest)
    scanned = [row for row in scanned_images(service.store) if row["image_digest"] == digest]
    total = sum(counts.values())
    bar, left = [], 0.0
    for level, name in SEVERITIES:
        count = counts.get(level, 0)
        width = 100.0 * count / total if total else 0.0
        bar.append({"level": level, "name": name, "count": count, "x": left, "width": width})
        left += width
    return pages.render(
        request,
        "image.html",
        digest=digest,
        overview=overviews[0],
        image=scanned[0] if scanned else None,
        findings=findings,
        counts=counts,
        total=total,
        bar=bar,
        sort=sort,
    )
