"""Rendering: the workspace written from a plan (copier), updated without losing edits, opened in VS Code.
Reads the planning layer; knows nothing of the terminal or the web."""
