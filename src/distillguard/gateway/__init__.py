"""The enforcement gateway (``distillguard serve``): an OpenAI-compatible proxy in front of
the model that logs every exchange in the canonical schema and applies the scan's verdicts,
the campaigns' indicators and online limits per request.

Modules, one concern each: protocol (wire shapes), keys (the API key table), journal (the
durable exchange log and its loader), limits (sliding-window counters), enforce (the
decision per request), overrides (operators' actions), metrics (Prometheus text), config,
server (the aiohttp application), mock_upstream (a stand-in model API for tests and benchmarks).
"""
