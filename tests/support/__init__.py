"""What the test tiers share: one module per concern, no tests here.

* ``asgi``: an httpx client for an ASGI app with its lifespan run;
* ``token_authority``: a token authority of the tests' own (unit tier: sessions in memory);
* ``tokens``: keys and tokens made by the auth service's own code, sessions in a real Valkey;
* ``timeouts``: the integration tier's slow-machine client timeouts;
* ``processes``: service processes for the stop tests (spawn, read lines, wait);
* ``gateway``: the real gateway in-process, trusting the test signing key;
* ``users``, ``auth``, ``audit``: settings and helpers for each service's tests;
* ``security``: the people, tokens and helpers of the security matrices;
* ``middleware``: a small app around the gateway's own middlewares, over a real Valkey.
"""
