"""The store: every Redis key of the engine and every change of an instance, in Lua scripts."""
