"""What every stage shares: errors, atomic writes, params loading, stage entry, table checks, hashing."""
