"""What the report computes from sweep rows: the rows and their tables (rows), DD-Ranking (ranking), the claims (claims)."""
