"""The web form (`tuneforge ui`): the form session and its loopback HTTP server, with its static page."""
