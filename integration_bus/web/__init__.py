"""HTTP faces of the bus: availability (and later a dead-letter console)."""
