"""The composition root: settings, broker, actors, services, providers, CLI."""
