"""portfolio_manager package."""
