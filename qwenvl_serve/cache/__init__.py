"""The exact-match result cache: repeated deterministic requests answered without the engine."""
