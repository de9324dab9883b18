"""Data-protection guardrails: detectors for personal data, secrets and prompt injection,
applied to prompts before they leave the gateway and to answers, streamed or whole, before
they reach the client. Plain Python, no I/O: the gateway's glue is gateway/data_policy.py."""
