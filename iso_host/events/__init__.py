"""Events: what the host tells the world (``record``, pure) and how it reaches the broker (``relay``)."""
