"""Hash-chained, append-only audit ledger with signed Merkle checkpoints."""
