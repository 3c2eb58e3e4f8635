"""``bus console``: the operators' web page over the dead-letter console and the journal."""
