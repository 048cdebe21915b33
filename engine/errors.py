"""The one exception tree of inboxlab.

Every error a user can cause derives from ``InboxlabError``; the CLI edge turns it into
one line on stderr and a non-zero exit code, never a traceback.

    InboxlabError
    ├── ConfigError        a config or profile file is malformed (file, key path, reason)
    │   └── ConfigErrors   several ConfigErrors found in one pass (``config check``)
    ├── InputError         bad input on the command line, API or stdin
    ├── QueryError         a warehouse query failed (bad SQL, unknown view)
    └── StateError         an operation is impossible in the current state
"""

from __future__ import annotations


class InboxlabError(Exception):
    """Base of every error a user can cause. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(InboxlabError):
    """A config file problem, located by file and dotted key path."""

    exit_code = 2

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


class ConfigErrors(ConfigError):
    """Several config problems found in one pass; ``problems`` holds each one."""

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems = problems
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first.file, first.key, first.reason + more)


class InputError(InboxlabError):
    """Bad input from a user: an argument, a request body, a line on stdin."""

    exit_code = 2


class QueryError(InboxlabError):
    """A warehouse query failed: bad SQL, an unknown view or column."""

    exit_code = 1


class StateError(InboxlabError):
    """The operation is impossible in the current state (e.g. nothing to replay)."""

    exit_code = 1
