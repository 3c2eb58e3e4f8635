"""Retail semantics in the core: the stock projection and availability to promise."""
