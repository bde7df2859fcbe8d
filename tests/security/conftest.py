"""The attacker's tests reuse the integration harness: a running bot on a real HTTP stack, a real
redis-server and the sandboxes, so each refusal is shown where a real request would land."""

from tests.integration.conftest import harness

__all__ = ["harness"]
