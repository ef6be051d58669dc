"""Next best action: the actions the bank may take with a customer, ranked (issue 18 item 4)."""
