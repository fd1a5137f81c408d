"""Test helpers: real local stand-ins for the systems the guard talks to."""
