"""DuckDB: database files of the duckdb tools, and the in-memory engine the SQL transforms run on."""
