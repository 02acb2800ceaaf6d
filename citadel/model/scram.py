"""PostgreSQL SCRAM-SHA-256 verifiers made on the controller: a role's password never reaches a
host in plaintext, and a stable verifier makes a converge report a change only when it changed."""

from __future__ import annotations

import base64
import hashlib
import hmac

SCRAM_ITERATIONS = 4096


def scram_sha256(password: str, role: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier for `password`, computed on the controller.

    The salt is derived from the password and the role name, so the verifier is stable across
    runs (the deploy reports a change only when a password really changes) and differs between
    roles; the plaintext password never leaves the controller.
    """
    salt = hmac.new(password.encode(), b"citadel-scram-salt:" + role.encode(), "sha256").digest()
    salt = salt[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def verifier_digest(verifier: str) -> str:
    """What the role fact reports for a role's stored password (md5 of pg_authid.rolpassword)."""
    return hashlib.md5(verifier.encode()).hexdigest()
