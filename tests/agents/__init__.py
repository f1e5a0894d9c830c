"""The real coding agents (Claude Code, Codex CLI) as gwc's clients: see README.md.

Nothing is imported here, so `python3 -m tests.agents.harness` runs without the venv.
"""
