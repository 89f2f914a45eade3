"""Errors in Docker's shape: a status code the CLI branches on, and a body `{"message": ...}`.

The docker CLI parses the body only when Content-Type is exactly `application/json` (no charset),
and it keys behaviour on the status (404 drives "no such service"), so both are part of the
contract. swarmkit's gRPC failures reach clients as `rpc error: code = X desc = ...`; messages
clients or scripts may grep are reproduced in that form.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


class ErrorBody(msgspec.Struct):
    """Every error response: what the CLI prints after `Error response from daemon:`."""

    message: str


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status Docker would answer with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class AlreadyExists(ApiError):
    status = 409


class Unimplemented(ApiError):
    status = 501


class Unavailable(ApiError):
    status = 503


class OutOfSequence(ApiError):
    """A stale `?version=`: dockerd answers 500, not 409, and the CLI only prints the message."""

    status = 500

    def __init__(self) -> None:
        super().__init__(rpc("Unknown", "update out of sequence"))


def rpc(code: str, desc: str) -> str:
    """The text dockerd shows for a swarmkit gRPC error."""
    return f"rpc error: code = {code} desc = {desc}"


def invalid_argument(desc: str) -> InvalidParameter:
    return InvalidParameter(rpc("InvalidArgument", desc))


def failed_precondition(desc: str) -> InvalidParameter:
    return InvalidParameter(rpc("FailedPrecondition", desc))


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(ErrorBody(message)), content_type="application/json")
