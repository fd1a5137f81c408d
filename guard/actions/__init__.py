"""A decision acted on: the dispatcher, the Leadterra pause call, notifications, exemptions, workspace keys,
and the audit event built from a decision."""

from guard.actions.pause import PauseClient, PauseResult

__all__ = ["PauseClient", "PauseResult"]
