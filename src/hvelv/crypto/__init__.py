"""Keys and encryption: keyring, envelope encryption, segmented streams, signatures."""
