"""Notifications: the outbox table and its SMTP sender."""
