"""The dead-letter console: query, show, edit, replay, discard, purge, audit (``bus dlq``)."""
