"""One module per pipeline stage; each asset wires plain code in data/ and ml/ and records."""
