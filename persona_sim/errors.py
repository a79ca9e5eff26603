"""Typed errors of the core. Only the CLI turns them into messages and exit codes."""
from __future__ import annotations


class PersonaSimError(Exception):
    """Base class of every error persona-sim raises on purpose."""


class ScenarioError(PersonaSimError):
    """A scenario file is missing, unreadable or invalid.

    ``problems`` holds one ``(key_path, message, bad_value)`` triple per problem.
    """

    def __init__(self, path: str, problems: list[tuple[str, str, object]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {len(problems)} problem(s) in scenario"]
        for key, msg, value in problems:
            shown = "" if value is _MISSING else f" (got {value!r})"
            lines.append(f"  {key or '<top>'}: {msg}{shown}")
        super().__init__("\n".join(lines))


_MISSING = object()
ScenarioError.MISSING = _MISSING  # marker for "no value to show"


class DatasetError(PersonaSimError):
    """A dataset cannot be found or parsed."""


class ProtocolError(PersonaSimError):
    """A peer sent something the wire protocol does not allow."""

    def __init__(self, code: str, message: str, device_id: str = "", seq: int = 0):
        self.code = code
        self.device_id = device_id
        self.seq = seq
        super().__init__(message)


class BundleError(PersonaSimError):
    """A model bundle is missing, corrupt or does not match the scenario."""


class NodeError(PersonaSimError):
    """A cloud or device node failed to start, connect or finish."""


class RunRestart(NodeError):
    """The cloud lost its side of a method's run (it restarted, or another shard left the run) and the
    connection is back: simulate that method again from its start."""
