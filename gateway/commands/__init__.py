"""Tools beside `run`: demo, doctor, sign."""
