"""The SQLAlchemy ``sql`` tools: Arrow and SQLAlchemy column types."""
