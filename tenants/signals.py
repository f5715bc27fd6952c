"""Hooks that let the layers above hear about tenant changes without tenants
importing them (docs/architecture.md, "Layers").

`access_revoked` is sent once the transaction that revoked a key or suspended an
org has committed. The gateway connects a receiver when it starts (gateway/apps.py)
that closes the matching sockets in every gateway process; a process that is not
listening (or a change made by raw SQL) is caught by each gateway process's
background re-check of the keys it serves, within about half a second.
"""
from django.dispatch import Signal

# Sent with: kind ("api_key" or "organization"), public_id (str), reason (str).
access_revoked = Signal()
