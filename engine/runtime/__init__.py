"""The runtime: run a step, resolve where the instance goes next, send the message that continues it."""
