"""The quality library, called in process by whoever runs a step (the ETL agent, the ``validate``
transform): the gate of a ``quality:`` group (``gate``), the gates of one step (``gates``), where
failing rows are set aside (``quarantine``), streaming data profiles (``profile``), the mergeable
sketches they are built from (``sketches``, ``numeric``), sampling (``sampling``) and anomaly
detection over stored profiles (``anomaly``, ``baseline``, ``metrics``). Nothing here imports the
agents (``agent_etl.agents``) or the bus: batches never leave the process that reads them."""
