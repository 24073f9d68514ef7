"""Accounts and credentials: users, sessions, API tokens, stream keys, signed URLs, the policy."""
