"""Access control: API keys and their grants, per-key rate limits, the audit log of administrative actions."""
