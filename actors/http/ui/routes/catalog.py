"""Projects, targets and policies: list, create, edit, delete (a target's password is
write-only), and a policy's "replicate now" and "stop all its jobs".

Input is checked by the HTTP API's own schemas (:mod:`actors.http.schemas`) and the
rules are the catalog's (:class:`~model.catalog.Catalog`): a refusal comes back as the
form with the message next to the field it names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from actors.http.errors import error_field
from actors.http.schemas import (
    MAX_ID,
    PolicyIn,
    PolicyUpdate,
    ProjectIn,
    ProjectUpdate,
    TargetIn,
    TargetUpdate,
)
from actors.http.ui._deps import CatalogDep, Form, FormDep, PagesDep, ServiceDep, logged_in
from actors.http.ui._render import Pages, redirect
from model.catalog import Catalog, NameTaken
from model.db.dashboard import JobFilter, job_page
from model.errors import InvalidRequest, NotFound

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(logged_in)])

RowId = Annotated[int, Path(alias="id", ge=0, le=MAX_ID)]


def _checked(model: type[BaseModel], values: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """``values`` validated by ``model``, or None and a message per field."""
    try:
        return model.model_validate(values), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "form"
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.setdefault(name, f"{name}: {message}")
        return None, errors


def _refusal(exc: Exception, model: type[BaseModel]) -> dict[str, str]:
    """The message of a catalog refusal, next to the field of ``model`` the API's answer
    names (:data:`~actors.http.errors.ANSWERS`), else the form's."""
    field = error_field(exc)
    if field is not None and field in model.model_fields:
        return {field: f"{field}: {exc}"}
    return {"form": str(exc)}


def _submit(
    model: type[BaseModel],
    values: dict[str, Any],
    save: Callable[[Any], Response],
    refused: Callable[[dict[str, str]], Response],
    errors: dict[str, str] | None = None,
) -> Response:
    """A form's POST: ``values`` checked by ``model`` and given to ``save``, which
    changes the catalog and answers; on a refusal (the form's ``errors``, the model's,
    or the catalog's), the form again by ``refused`` with the messages."""
    body, more = _checked(model, values) if not errors else (None, {})
    errors = {**(errors or {}), **more}
    if body is not None:
        try:
            return save(body)
        except (NameTaken, NotFound, InvalidRequest) as exc:
            errors = _refusal(exc, model)
    return refused(errors)


def _id(text: str, name: str, errors: dict[str, str]) -> int | None:
    if not text.isdigit() or int(text) > MAX_ID:
        errors[name] = f"{name}: choose one"
        return None
    return int(text)


# -- projects ------------------------------------------------------------------------------


@router.get("/projects")
def projects(request: Request, pages: PagesDep, catalog: CatalogDep) -> Response:
    return _projects(request, pages, catalog, {}, {})


def _projects(
    request: Request,
    pages: Pages,
    catalog: Catalog,
    errors: dict[str, str],
    values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    rows = catalog.projects()
    return pages.render(
        request,
        "projects.html",
        status_code,
        projects=rows,
        used=catalog.projects_in_use(),
        errors=errors,
        values=values,
    )


@router.post("/projects")
def add_project(request: Request, pages: PagesDep, catalog: CatalogDep, form: FormDep) -> Response:
    values = {"name": form.get("name"), "public": form.flag("public")}

    def save(body: ProjectIn) -> Response:
        row = catalog.add_project(body.name, body.public)
        return redirect("/ui/projects", done="added", name=row.name)

    return _submit(
        ProjectIn,
        values,
        save,
        lambda errors: _projects(request, pages, catalog, errors, values, 400),
    )


@router.get("/projects/{id}")
def project(request: Request, pages: PagesDep, catalog: CatalogDep, ident: RowId) -> Response:
    row = catalog.project(ident)
    return pages.render(request, "project.html", project=row, errors={}, values=row.model_dump())


@router.post("/projects/{id}")
def update_project(
    request: Request, pages: PagesDep, catalog: CatalogDep, form: FormDep, ident: RowId
) -> Response:
    row = catalog.project(ident)
    values = {"name": form.get("name"), "public": form.flag("public")}

    def save(body: ProjectUpdate) -> Response:
        catalog.update_project(ident, **body.model_dump(exclude_none=True))
        return redirect("/ui/projects", done="saved", name=body.name)

    return _submit(
        ProjectUpdate,
        values,
        save,
        lambda errors: pages.render(
            request, "project.html", 400, project=row, errors=errors, values=values
        ),
    )


@router.post("/projects/{id}/delete")
def delete_project(catalog: CatalogDep, form: FormDep, ident: RowId) -> Response:
    catalog.delete_project(ident)
    return redirect("/ui/projects", done="deleted")


# -- targets -------------------------------------------------------------------------------


@router.get("/targets")
def targets(request: Request, pages: PagesDep, catalog: CatalogDep) -> Response:
    return _targets(request, pages, catalog, {}, {})


def _targets(
    request: Request,
    pages: Pages,
    catalog: Catalog,
    errors: dict[str, str],
    values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    return pages.render(
        request,
        "targets.html",
        status_code,
        targets=catalog.targets(),
        errors=errors,
        values=values,
    )


def _target_values(form: Form) -> dict[str, Any]:
    return {
        "name": form.get("name"),
        "url": form.get("url"),
        "username": form.get("username"),
        "insecure": form.flag("insecure"),
    }


@router.post("/targets")
def add_target(request: Request, pages: PagesDep, catalog: CatalogDep, form: FormDep) -> Response:
    values = _target_values(form)

    def save(body: TargetIn) -> Response:
        row = catalog.add_target(**body.plain())
        return redirect("/ui/targets", done="added", name=row.name)

    # The password is never sent back, not even into its own field.
    return _submit(
        TargetIn,
        {**values, "password": form.raw("password")},
        save,
        lambda errors: _targets(request, pages, catalog, errors, values, 400),
    )


@router.get("/targets/{id}")
def target(request: Request, pages: PagesDep, catalog: CatalogDep, ident: RowId) -> Response:
    row = catalog.target(ident)
    values = row.model_dump(exclude={"password"})
    return pages.render(request, "target.html", target=row, errors={}, values=values)


@router.post("/targets/{id}")
def update_target(
    request: Request, pages: PagesDep, catalog: CatalogDep, form: FormDep, ident: RowId
) -> Response:
    row = catalog.target(ident)
    values = _target_values(form)
    checked = dict(values)
    if form.flag("clear_password"):
        checked["password"] = ""
    elif form.raw("password"):
        checked["password"] = form.raw("password")

    def save(body: TargetUpdate) -> Response:
        catalog.update_target(ident, **body.plain())
        return redirect("/ui/targets", done="saved", name=body.name)

    return _submit(
        TargetUpdate,
        checked,
        save,
        lambda errors: pages.render(
            request, "target.html", 400, target=row, errors=errors, values=values
        ),
    )


@router.post("/targets/{id}/delete")
def delete_target(catalog: CatalogDep, form: FormDep, ident: RowId) -> Response:
    catalog.delete_target(ident)
    return redirect("/ui/targets", done="deleted")


# -- policies ------------------------------------------------------------------------------


def _policy_values(form: Form, errors: dict[str, str]) -> dict[str, Any]:
    return {
        "name": form.get("name"),
        "project_id": _id(form.get("project_id"), "project_id", errors),
        "target_id": _id(form.get("target_id"), "target_id", errors),
        "description": form.get("description"),
        "enabled": form.flag("enabled"),
        "replicate_deletion": form.flag("replicate_deletion"),
    }


def _choices(catalog: Catalog) -> dict[str, Any]:
    return {
        "projects": {p.id: p.name for p in catalog.projects()},
        "targets": {t.id: t.name for t in catalog.targets()},
    }


@router.get("/policies")
def policies(request: Request, pages: PagesDep, catalog: CatalogDep) -> Response:
    return _policies(request, pages, catalog, {}, {"enabled": True})


def _policies(
    request: Request,
    pages: Pages,
    catalog: Catalog,
    errors: dict[str, str],
    values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    return pages.render(
        request,
        "policies.html",
        status_code,
        policies=catalog.policies(),
        errors=errors,
        values=values,
        **_choices(catalog),
    )


@router.post("/policies")
def add_policy(request: Request, pages: PagesDep, catalog: CatalogDep, form: FormDep) -> Response:
    errors: dict[str, str] = {}
    values = _policy_values(form, errors)

    def save(body: PolicyIn) -> Response:
        row = catalog.add_policy(**body.model_dump())
        return redirect(f"/ui/policies/{row.id}", done="added")

    return _submit(
        PolicyIn,
        values,
        save,
        lambda errors: _policies(request, pages, catalog, errors, values, 400),
        errors,
    )


@router.get("/policies/{id}")
def policy(
    request: Request, pages: PagesDep, service: ServiceDep, catalog: CatalogDep, ident: RowId
) -> Response:
    row = catalog.policy(ident)
    return _policy(request, pages, service, catalog, row, {}, row.model_dump())


def _policy(
    request: Request,
    pages: Pages,
    service: Any,
    catalog: Catalog,
    row: Any,
    errors: dict[str, str],
    values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    recent = job_page(service.store, [service.kinds["replication"]], JobFilter(policy_id=row.id), 1)
    return pages.render(
        request,
        "policy.html",
        status_code,
        policy=row,
        recent=recent,
        errors=errors,
        values=values,
        **_choices(catalog),
    )


@router.post("/policies/{id}")
def update_policy(
    request: Request,
    pages: PagesDep,
    service: ServiceDep,
    catalog: CatalogDep,
    form: FormDep,
    ident: RowId,
) -> Response:
    row = catalog.policy(ident)
    errors: dict[str, str] = {}
    values = _policy_values(form, errors)

    def save(body: PolicyUpdate) -> Response:
        catalog.update_policy(ident, **body.model_dump(exclude_none=True))
        return redirect(f"/ui/policies/{ident}", done="saved")

    return _submit(
        PolicyUpdate,
        values,
        save,
        lambda errors: _policy(request, pages, service, catalog, row, errors, values, 400),
        errors,
    )


@router.post("/policies/{id}/replicate")
def replicate(service: ServiceDep, form: FormDep, ident: RowId) -> Response:
    """Replicates every repository of the policy's project now."""
    ids = service.replicate(ident)
    return redirect("/ui/jobs", policy=ident, done="replicate", count=len(ids))


@router.post("/policies/{id}/stop")
def stop_policy(service: ServiceDep, form: FormDep, ident: RowId) -> Response:
    """Stops every unfinished job of the policy."""
    ids = service.stop_policy(ident)
    return redirect(f"/ui/policies/{ident}", done="stop", count=len(ids))


@router.post("/policies/{id}/delete")
def delete_policy(catalog: CatalogDep, form: FormDep, ident: RowId) -> Response:
    catalog.delete_policy(ident)
    return redirect("/ui/policies", done="deleted")
