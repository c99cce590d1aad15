"""The sensor's manager: TCP/5029 server and the manager commands (shared with the C/S task path)."""

from .commands import (
    COMMAND_NOT_FOUND,
    COMMANDS,
    COMPAT_VERSION,
    NOT_NEED_AES,
    AsyncWriter,
    Command,
    CommandContext,
    execute,
    find_command,
    not_need_aes,
)
from .server import (
    NEED_AES_REPLY,
    ManagerRequest,
    ManagerServer,
    parse_request,
    read_request,
    request_complete,
)

__all__ = [
    "COMMANDS",
    "COMMAND_NOT_FOUND",
    "COMPAT_VERSION",
    "NEED_AES_REPLY",
    "NOT_NEED_AES",
    "AsyncWriter",
    "Command",
    "CommandContext",
    "ManagerRequest",
    "ManagerServer",
    "execute",
    "find_command",
    "not_need_aes",
    "parse_request",
    "read_request",
    "request_complete",
]
