"""Built-in connector plugins (registered through ``integration_bus.connectors`` entry points)."""
