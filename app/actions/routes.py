"""Next best actions over HTTP: a customer's actions ranked for a channel."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request

from app.actions.schemas import NextBestActions
from app.actions.service import NextBestActionService
from app.contact.states import ContactChannel
from app.http.deps import PseudonymizerDep, require
from app.security.audit import note
from app.security.principal import Principal, Scope
from app.security.text import ID_PATTERN

router = APIRouter(prefix="/v1", tags=["next best action"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
CustomersReader = Annotated[Principal, Depends(require(Scope.CUSTOMERS_READ))]
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]


async def get_next_best_actions(request: Request) -> NextBestActionService:
    """The next-best-action service the app was created with."""
    service: NextBestActionService = request.app.state.next_best_actions
    return service


NextBestActionsDep = Annotated[NextBestActionService, Depends(get_next_best_actions)]


@router.get(
    "/customers/{customer_id}/next-best-actions",
    response_model=NextBestActions,
    responses={
        404: {"description": "No events of this customer for the caller", **PROBLEM},
        422: {"description": "Invalid parameters, or a trail a model cannot score", **PROBLEM},
        503: {"description": "Database or model unavailable", **PROBLEM},
    },
)
async def next_best_actions(
    request: Request,
    caller: CustomersReader,
    pseudonymizer: PseudonymizerDep,
    service: NextBestActionsDep,
    customer_id: CustomerIdPath,
    channel: Annotated[
        ContactChannel, Query(description="The channel the actions would be taken in.")
    ] = ContactChannel.PHONE,
) -> NextBestActions:
    """A customer's next best actions for a channel, ranked by priority, each with its factors;
    every other action with the one stage that removed it."""
    answer = await anyio.to_thread.run_sync(
        lambda: service.next_best_actions(
            customer_id=customer_id, tenant=caller.tenant, channel=channel
        )
    )
    stored = pseudonymizer.pseudonym(customer_id, caller.tenant) if pseudonymizer else customer_id
    note(
        request,
        customer=stored,
        channel=channel.value,
        offered=[item.action for item in answer.offered],
    )
    return answer
