"""SQLite: the database file a connection names, and its types."""
