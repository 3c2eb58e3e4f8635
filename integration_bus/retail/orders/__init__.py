"""The order process manager: a saga per order that re-sources, back-orders or cancels short
lines per the sourcing policy, with compensation (docs/orders.md)."""
