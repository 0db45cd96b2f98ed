"""Operating the engine: worker fleets, the embedded Redis, start-up health checks, archive, demo."""
