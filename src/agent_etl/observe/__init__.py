"""What an operator watches a run with: Prometheus metrics (``metrics``), webhook alerts
(``alerts``), OpenTelemetry spans (``tracing``, with the ``otel`` extra) and log lines that name the
run and the task (``logs``). The monitor agent feeds the first two from the bus; nothing here
imports an agent."""
