"""How opsflow runs: every deployment with its schedule, `opsflow up`, and the CLI."""
