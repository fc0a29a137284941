"""The demo: a simulated agent execution with events of every type (SPEC §7)."""
