"""What the database tools (postgres, mysql, sqlite, duckdb, sql) share: their options, incremental
cursors, partitioned reads and how a connection is named in messages."""
