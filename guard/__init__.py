"""Deliverability guard: pauses Leadterra campaigns when bounce and complaint evidence crosses a rule."""

__version__ = "0.1.0"
