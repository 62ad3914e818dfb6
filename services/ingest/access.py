"""What the caller's tenant may see. Another tenant's job, file, batch or dead letter answers 404,
exactly as a missing one does, so ids reveal nothing across tenants."""

from __future__ import annotations

from fastapi import Request

from services.ingest.auth import tenant_of
from services.ingest.errors.client import ApiException


def job_not_found(job_id: str) -> ApiException:
    return ApiException(404, f"job {job_id} not found", type="not_found", field="job_id")


async def owned_job(request: Request, job_id: str) -> str:
    """The job's status, if it exists and belongs to the caller's tenant; otherwise 404."""
    status, tenant = await request.app.state.jobs.status_and_tenant(job_id)
    if status is None or tenant != tenant_of(request):
        raise job_not_found(job_id)
    return status


async def dead_letter_visible(request: Request, info) -> bool:
    """A dead letter belongs to the tenant of its job or webhook; one that names neither (an
    unreadable message) is shown only when auth is off (to the operator of a one-tenant setup)."""
    if info.job_id:
        status, tenant = await request.app.state.jobs.status_and_tenant(info.job_id)
        return status is not None and tenant == tenant_of(request)
    if info.webhook_id:
        return await request.app.state.webhooks.get(info.webhook_id, tenant_of(request)) is not None
    return not request.app.state.auth_enabled
