"""The terminal: the interactive questions and the plain-text reports of a plan and the catalog."""
