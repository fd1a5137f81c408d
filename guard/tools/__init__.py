"""The tools around the rules and the audit topic: replay, rule tests, explain, decisions, generate, demo."""
