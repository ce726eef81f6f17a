"""Cost accounting: pricing from provider cards, budgets, reservations, settlement, reports."""
