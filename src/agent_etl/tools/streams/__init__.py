"""What the stream tools (``redis_stream``, ``nats``) share, without importing their client libraries:

- ``options``: the options of every stream source and sink (``url``/``connection``, ``stream``,
  ``mode: bounded|continuous``, ``max_messages``, ``max_seconds``, micro-batch size and latency,
  payload format, pinned schema);
- ``decode`` / ``encode``: message payloads to Arrow (NDJSON read by ``pyarrow.json``: no Python
  work per record) and Arrow rows to JSON payloads (DuckDB's ``to_json``);
- ``rules``: when a read stops (bounded: a message budget, a time budget, or caught up; continuous:
  a stop request, which SIGINT/SIGTERM make through the CLI) and the micro-batch clock;
- ``marks``: the order of stream marks (a Redis entry id, a NATS stream sequence), which the runtime
  compares to find where a stream source stands (``agents.destinations.cursors``);
- ``source``: ``StreamExtractor``, the read loop, positions and acknowledgements after commit that
  both sources build on (a source supplies reading, acking and closing).
"""
