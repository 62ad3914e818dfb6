"""The `modal.exception` classes the scaling backend tells apart, with the names and base classes
they have in modal 1.6 (server errors are also grpclib errors there, when grpclib is installed)."""

from __future__ import annotations

try:
    from grpclib import GRPCError as _GRPCBase
except ImportError:  # the fake must not need modal's dependencies
    _GRPCBase = Exception


class Error(Exception):
    pass


class _GRPCErrorWrapper(_GRPCBase):
    def __init__(self, message: str | None = None):
        Exception.__init__(self, message or "")
        self._message = message or ""

    def __str__(self) -> str:
        return self._message


class AlreadyExistsError(Error, _GRPCErrorWrapper):
    pass


class AuthError(Error, _GRPCErrorWrapper):
    pass


class InternalError(Error, _GRPCErrorWrapper):
    pass


class InvalidError(Error, _GRPCErrorWrapper):
    pass


class ConflictError(InvalidError, _GRPCErrorWrapper):
    pass


class NotFoundError(Error, _GRPCErrorWrapper):
    pass


class PermissionDeniedError(Error, _GRPCErrorWrapper):
    pass


class ResourceExhaustedError(Error, _GRPCErrorWrapper):
    pass


class ServiceError(Error, _GRPCErrorWrapper):
    pass


class RemoteError(Error):
    pass


class TimeoutError(Error):  # noqa: A001 - modal's own name, not the builtin
    pass


class FunctionTimeoutError(TimeoutError):
    pass


class OutputExpiredError(TimeoutError):
    pass


class ConnectionError(Error):  # noqa: A001 - modal's own name, not the builtin
    pass


class ExecutionError(Error):
    pass


class InternalFailure(Error):
    pass


class ClientClosed(Error):
    pass


class InputCancellation(BaseException):
    pass
