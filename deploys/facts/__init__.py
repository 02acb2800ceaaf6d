"""Custom pyinfra facts (read-only commands whose output the deploys plan from)."""
