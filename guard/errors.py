"""Every error the guard raises on purpose.

GuardError
 +-- ConfigError           a setting is wrong; the service refuses to start
 +-- RuleFileError         a rule file is invalid; every problem is listed (guard.rules.loader)
 +-- MalformedEvent        record bytes break the event contract; dead-lettered (guard.contracts.events)
"""


class GuardError(Exception):
    """Base of the guard's own errors."""


class ConfigError(GuardError):
    """A setting is missing or wrong; the message names it."""
