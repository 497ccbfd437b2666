"""Integrations with proxies that providers already run."""
