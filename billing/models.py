"""Price book, usage ledger, tallies and invoices (built by the billing issue)."""
