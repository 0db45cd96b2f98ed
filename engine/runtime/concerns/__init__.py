"""The concerns of a step's life, one module each, plugged into the named hooks of :mod:`engine.runtime.pipeline`.

Which concerns a runtime runs, and in what order, is one list: :func:`engine.runtime.runner.concerns`.
A new concern is a module here with a :class:`~engine.runtime.pipeline.Hook` subclass, and one line there.
"""
