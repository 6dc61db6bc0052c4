"""Projects, memberships, API keys and project keys."""
