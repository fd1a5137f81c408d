"""Rule files: frozen models and the loader that turns YAML into a RuleSet."""

from guard.rules.loader import RuleFileError, load_rules, parse_rules
from guard.rules.models import Rule, RuleFile, RuleSet

__all__ = ["Rule", "RuleFile", "RuleFileError", "RuleSet", "load_rules", "parse_rules"]
