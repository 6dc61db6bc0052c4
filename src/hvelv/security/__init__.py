"""Authentication and authorization: passwords, TOTP, tokens, API keys, authorize()."""
