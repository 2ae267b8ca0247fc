"""The domain: documents, rules, services, persistence and ports. Imports nothing of ours."""
