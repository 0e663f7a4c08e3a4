"""MariaDB / MySQL (PyMySQL): connections, identifiers, types and XA two-phase commit."""
