"""What changed, over HTTP (issue #21)::

    POST /api/v1/explain   a Question (gravix.explain.analysis) -> findings, in words and numbers

Any credential may ask (it is a query); the tenant is the credential's, and a
body naming one is refused. Errors have the one JSON shape, naming the field.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gravix.api.sessions import caller_of, json_response, refuse_query_params
from gravix.errors import BadRequest, GravixError
from gravix.explain.analysis import answer, decode_question

MAX_BODY = 16 * 1024


class ExplainTimeout(GravixError):
    status = 504
    code = "query_timeout"


async def explain(request: Request) -> Response:
    caller = caller_of(request)
    refuse_query_params(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"a question is at most {MAX_BODY} bytes")
    question = decode_question(body)
    state = request.app.state.gravix
    try:
        found = await asyncio.wait_for(
            asyncio.to_thread(answer, state.queries, caller.tenant, question),
            state.query_timeout_seconds,
        )
    except TimeoutError:
        raise ExplainTimeout(
            f"the explanation took longer than {state.query_timeout_seconds:g} s; "
            "ask about a shorter window"
        ) from None
    return json_response(found)


def explain_routes() -> list[BaseRoute]:
    return [Route("/api/v1/explain", explain, methods=["POST"])]
