"""order_calc package."""
