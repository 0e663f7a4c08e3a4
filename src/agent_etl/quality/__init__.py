"""The quality agent's own library: streaming data profiles (``profile``), the mergeable sketches
they are built from (``sketches``, ``numeric``), sampling (``sampling``) and the metrics anomaly
detection reads out of stored profiles (``metrics``). Nothing here imports the runtime."""
