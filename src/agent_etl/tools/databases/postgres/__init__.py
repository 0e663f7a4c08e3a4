"""PostgreSQL (psycopg 3): connections, binary COPY in both directions, types, DDL and two-phase commit."""
