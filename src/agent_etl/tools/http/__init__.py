"""What the API tools (``rest``, ``graphql`` extractors, ``http`` loader) share.

- ``options``: the option models (auth, pagination, rate limit, retries, fan-out, incremental).
- ``target``: where a step's requests go (its url, or a named connection's) and the run's shared
  ``Endpoint`` for it.
- ``client``: the ``Endpoint`` (aiohttp session, rate limit, auth) and ``request`` with retries.
- ``auth``: bearer, basic, API key, OAuth2 client credentials; secrets only from ``${...}``.
- ``bucket``: the token bucket of a connection's rate limit.
- ``pages``: pagination styles: the request after a page.
- ``decode``: page bodies to Arrow (Arrow's JSON reader), schema inference and widening.
- ``nested``: nested values as JSON text (``nested: json``).
- ``source``: the read loop of the extractors: batches of whole pages, positions, fan-out, marks.

Not imported by the core: importing it needs the ``api`` extra (aiohttp, orjson).
"""
