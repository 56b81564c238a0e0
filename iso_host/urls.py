"""URLs fit for logs and messages: a ledger or broker URL without its password."""

from __future__ import annotations

from urllib.parse import urlsplit


def redacted_url(url: str) -> str:
    """``url`` without a password, in the user part (``user:secret@``) or the query (``password=``, ``sslpassword=``).

    >>> redacted_url("postgresql://iso:secret@db:5432/ledger?password=x&sslmode=require")
    'postgresql://iso@db:5432/ledger?sslmode=require'
    """
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{host}" if at else host
    query = "&".join(p for p in parts.query.split("&") if p and "password" not in p.partition("=")[0].lower())
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
