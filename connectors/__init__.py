"""Built-in connector plugins (registered through the ``integration_bus.connectors`` entry points)."""
