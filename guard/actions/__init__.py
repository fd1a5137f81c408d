"""Actions on the outside world: the Leadterra pause call, with its retry policy."""

from guard.actions.pause import PauseClient, PauseResult

__all__ = ["PauseClient", "PauseResult"]
