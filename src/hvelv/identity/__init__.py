"""Users, login with password and TOTP, sessions and refresh tokens."""
