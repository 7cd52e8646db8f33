"""The signature headers of an HTTP interaction, judged by their form alone: from the request's
head, before its body is read (the web endpoint), and again as the signature is checked."""

from __future__ import annotations


def malformed_signature(signature: str | None, timestamp: str | None) -> str | None:
    """Why a request's signature headers cannot be those of a signed interaction (missing,
    or not of their form), else ``None``: known from its head, before its body is read."""
    if not signature or not timestamp:
        return "Missing X-Signature-Ed25519 or X-Signature-Timestamp header."
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "The request's timestamp is not a Unix time in seconds."
    if len(signature) != 128:
        return "Invalid request signature."
    try:
        bytes.fromhex(signature)
    except ValueError:
        return "Invalid request signature."
    return None
