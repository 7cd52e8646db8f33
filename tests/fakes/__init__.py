"""Test doubles: hand-written stand-ins for the ports' real adapters, kept out of the package
(nothing test-only ships in the wheel). Each passes the port's contract suite in
``tests/contracts/``, which keeps it as strict as the real adapter."""
