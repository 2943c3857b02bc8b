"""tuneforge: generate fine-tuning workspaces that run for real."""

__version__ = "0.1.0"
