"""Expressions: the safe CEL language of definitions, its functions and its static checks."""
